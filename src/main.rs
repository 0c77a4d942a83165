//! The composition root: parses arguments, wires sources, decisions and output, owns the tasks.

use std::{io::Write, process::ExitCode};

use anyhow::Context;
use clap::Parser;
use headroom::{
    cli::{Args, Command, LogFormat, Output},
    config::Config,
    source::live,
    status::StatusReport,
};

fn main() -> ExitCode {
    let args = Args::parse();
    // One TLS stack, one provider, chosen here for every client and server in the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let default_level = if matches!(args.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    init_logging(args.log_format, default_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let Args {
        config,
        log_format: _,
        command,
    } = args;
    let config_path = config;
    let config = Config::load(config_path.as_deref())?;
    match command {
        Command::Serve(serve) => headroom::serve::run(config, serve).await,
        Command::Certs {
            service,
            namespace,
            out,
            clients,
        } => {
            let names = headroom::certs::service_names(&service, &namespace);
            let written = headroom::certs::write(&out, names, &clients)?;
            eprintln!(
                "wrote {}, {} and {}",
                written.ca.display(),
                written.cert.display(),
                written.key.display()
            );
            for pair in &written.clients {
                eprintln!(
                    "wrote {} and {} (client {:?})",
                    pair.cert.display(),
                    pair.key.display(),
                    pair.name
                );
            }
            eprintln!("caBundle:");
            println!("{}", written.ca_bundle);
            Ok(())
        }
        Command::Simulate {
            scenario,
            policy,
            output,
            snapshot,
        } => {
            use headroom::simulate::{self, Policy, Scenario};
            let (scenario_def, files) = Scenario::load(&scenario)?;
            let Some(snapshot) = snapshot.or(files.snapshot) else {
                anyhow::bail!("{}: names no snapshot; pass --snapshot FILE", scenario.display());
            };
            // --config (or HEADROOM_CONFIG) wins over the scenario's own config.
            let config = match (&config_path, &files.config) {
                (None, Some(path)) => Config::load(Some(path))?,
                _ => config,
            };
            let state = headroom::source::file::load(&snapshot)?;
            let policy = match policy {
                headroom::cli::SimPolicy::Proactive => Policy::Proactive,
                headroom::cli::SimPolicy::Reactive => Policy::Reactive,
            };
            let report = simulate::run(&scenario_def, state, &config, policy);
            let text = match output {
                Output::Json => serde_json::to_string_pretty(&report)? + "\n",
                Output::Table => report.to_table(),
            };
            std::io::stdout()
                .write_all(text.as_bytes())
                .context("writing to stdout")?;
            Ok(())
        }
        Command::CheckConfig => {
            print!("{}", config.to_yaml());
            Ok(())
        }
        Command::Status { source, output } => {
            let loaded = headroom::serve::load_index(&source).await?;
            if let Some(w) = &loaded.watches {
                w.abort();
            }
            let index = loaded.index;
            // Proxmox is read without holding the index: only the attachment facts are taken.
            let observed = match &config.proxmox {
                Some(p) => {
                    let attached = index.with_state(|s, _| {
                        headroom::proxmox::inventory::AttachedDisks::from_state(s, &config.block_driver)
                    });
                    Some(headroom::provisioner::observe(p, &attached).await)
                }
                None => None,
            };
            let (drift, in_flight, error) = match observed {
                Some(Ok(o)) => (o.drift, o.in_flight, None),
                Some(Err(e)) => (
                    Default::default(),
                    Vec::new(),
                    Some(format!("Proxmox not read: {e}")),
                ),
                None => (Default::default(), Vec::new(), None),
            };
            // What Proxmox shows in flight is what the actuator would resume: its status.
            let clock = headroom::clock::Clock::system();
            let mut actuator = headroom::provisioner::resumed_status(&config, &in_flight, clock.now());
            // The windows and scale times serve persisted: the same inputs as its next tick.
            let record = headroom::serve::load_durable(loaded.client.as_ref()).await;
            record.merge_status(&mut actuator);
            let mut windows = record.windows;
            let mut report = index.with_state(|s, _| {
                let mut report =
                    StatusReport::observed(s, &config, &drift.ghosts, &actuator, &mut windows, clock.now());
                report.ghost_repairs =
                    headroom::decide::ghosts::repairs(&drift.found, None, s, &config, clock.now());
                report
            });
            report.provisioner.in_flight = in_flight
                .iter()
                .map(|v| format!("{} (VM {})", v.name, v.vmid))
                .collect();
            report.provisioner.error = error;
            let text = match output {
                Output::Json => report.to_json() + "\n",
                Output::Table => report.to_table(),
            };
            std::io::stdout()
                .write_all(text.as_bytes())
                .context("writing to stdout")?;
            Ok(())
        }
        Command::Snapshot { kubeconfig, out } => {
            let client = live::client(kubeconfig.as_deref()).await?;
            let list = live::snapshot(client).await?;
            let text = serde_json::to_string_pretty(&list)? + "\n";
            if out.as_os_str() == "-" {
                std::io::stdout()
                    .write_all(text.as_bytes())
                    .context("writing to stdout")?;
            } else {
                std::fs::write(&out, text).with_context(|| format!("{}: cannot write", out.display()))?;
            }
            Ok(())
        }
    }
}
