//! The composition root: parses the arguments, installs the TLS provider and the logger,
//! starts the runtime and hands each command to what wires it (`serve`, `commands`).

use std::process::ExitCode;

use clap::Parser;
use headroom::{
    cli::{Args, Command, LogFormat},
    commands,
    config::Config,
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
        config: config_path,
        log_format: _,
        namespace,
        command,
    } = args;
    let config = Config::load(config_path.as_deref())?;
    match command {
        Command::Serve(serve) => headroom::serve::run(config, namespace, serve).await,
        Command::Status { source, output } => commands::status(&config, &namespace, &source, output).await,
        Command::Simulate {
            scenario,
            policy,
            output,
            snapshot,
            plot,
        } => commands::simulate(
            config,
            commands::SimulateArgs {
                config_path: config_path.as_deref(),
                scenario: &scenario,
                snapshot: snapshot.as_deref(),
                policy,
                output,
                plot: plot.as_deref(),
            },
        ),
        Command::Snapshot {
            kubeconfig,
            context,
            out,
        } => commands::snapshot(kubeconfig.as_deref(), context.as_deref(), &out).await,
        Command::Certs {
            service,
            out,
            clients,
        } => commands::certs(&service, &namespace, &out, &clients),
        Command::Completions { shell } => commands::completions(shell),
        Command::CheckConfig => {
            print!("{}", config.to_yaml());
            Ok(())
        }
    }
}
