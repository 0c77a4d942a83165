//! Command-line arguments (clap derive, every flag also from the environment).

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "headroom",
    version,
    about = "Block-PVC and memory headroom for Kubernetes on Proxmox"
)]
pub struct Args {
    /// Config file (YAML); every key is optional.
    #[arg(long, global = true, env = "HEADROOM_CONFIG")]
    pub config: Option<PathBuf>,

    /// Log format on stderr.
    #[arg(long, global = true, env = "HEADROOM_LOG_FORMAT", default_value = "plain")]
    pub log_format: LogFormat,

    /// The namespace headroom runs in: its Service, Lease and persisted windows live there
    /// (kubectl's `-n`, so `kubectl headroom -n NS status` reads that install).
    #[arg(
        long,
        short = 'n',
        global = true,
        env = "POD_NAMESPACE",
        default_value = "headroom-system"
    )]
    pub namespace: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SimPolicy {
    /// headroom's: admission, extender, planner on the projection.
    Proactive,
    /// kproximate's: 10 s poll of Pending pods, one fixed-size VM at a time.
    Reactive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Where cluster state comes from.
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// Read the cluster from a snapshot file instead of the API server.
    #[arg(long, env = "HEADROOM_SNAPSHOT")]
    pub snapshot: Option<PathBuf>,

    /// Kubeconfig for the live source (default: KUBECONFIG, ~/.kube/config or in-cluster).
    #[arg(long, env = "HEADROOM_KUBECONFIG", conflicts_with = "snapshot")]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use (default: its current context), as kubectl's `--context`.
    #[arg(long, env = "HEADROOM_CONTEXT", conflicts_with = "snapshot")]
    pub context: Option<String>,

    /// How long the live source may take to list every kind.
    #[arg(long, env = "HEADROOM_SYNC_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub sync_timeout: Duration,
}

/// Flags of `serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub source: SourceArgs,

    /// TLS listener for the webhook and the extender.
    #[arg(long, env = "HEADROOM_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: std::net::SocketAddr,

    /// Plain-HTTP listener for /metrics, /livez and /readyz.
    #[arg(long, env = "HEADROOM_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    pub admin_listen: std::net::SocketAddr,

    /// Serving certificate (PEM); re-read when it changes.
    #[arg(long, env = "HEADROOM_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Serving key (PEM); re-read when it changes.
    #[arg(long, env = "HEADROOM_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// How often the certificate files are checked for changes.
    #[arg(long, env = "HEADROOM_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub tls_reload_interval: Duration,

    /// How often the projection is evaluated for scale-up and scale-down (admissions also wake it).
    #[arg(long, env = "HEADROOM_PLAN_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub plan_interval: Duration,

    /// After SIGTERM, how long in-flight requests may take to finish.
    #[arg(long, env = "HEADROOM_DRAIN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Connections the TLS listener holds open at most; past it, new ones are closed at once.
    #[arg(long, env = "HEADROOM_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the webhook, the extender and the admin port.
    Serve(ServeArgs),
    /// Write a CA, a serving certificate for the webhook Service and any client certificates;
    /// print the caBundle.
    Certs {
        #[arg(long, default_value = "headroom")]
        service: String,
        #[arg(long)]
        out: PathBuf,
        /// Also issue a client certificate with this common name (repeatable): the API
        /// server's and kube-scheduler's, for `tls.clientCAFile` and `tls.allowedClientNames`.
        #[arg(long = "client", value_name = "NAME")]
        clients: Vec<String>,
    },
    /// Print the per-node capacity table and the cluster projection, then exit.
    Status {
        #[command(flatten)]
        source: SourceArgs,
        #[arg(long, short, env = "HEADROOM_OUTPUT", default_value = "table")]
        output: Output,
    },
    /// Write the live cluster state headroom reads to a file (a kubectl-style List).
    Snapshot {
        #[arg(long, env = "HEADROOM_KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
        #[arg(long, env = "HEADROOM_CONTEXT")]
        context: Option<String>,
        /// Output file; `-` for stdout.
        #[arg(long, default_value = "-")]
        out: PathBuf,
    },
    /// Replay a scenario on a snapshot and report what happened, then exit.
    Simulate {
        #[arg(long)]
        scenario: PathBuf,
        #[arg(long, default_value = "proactive")]
        policy: SimPolicy,
        #[arg(long, short, default_value = "table")]
        output: Output,
        /// Overrides the scenario's own snapshot.
        #[arg(long)]
        snapshot: Option<PathBuf>,
        /// Also run the other policy and draw both over time into this SVG file.
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<PathBuf>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish or powershell).
    Completions { shell: clap_complete::Shell },
    /// Validate the config file and print the effective config with defaults.
    CheckConfig,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Args::command().debug_assert();
    }
}
