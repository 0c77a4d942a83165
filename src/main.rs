//! The composition root: parses arguments, wires sources, decisions and output, owns the tasks.

use std::{io::Write, process::ExitCode};

use anyhow::{Context, bail};
use clap::Parser;
use headroom::{
    cli::{Args, Command, LogFormat, Output, SourceArgs},
    config::Config,
    index::SharedIndex,
    source::{file, live},
    status::StatusReport,
};

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
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

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
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
    let config = Config::load(config.as_deref())?;
    match command {
        Command::CheckConfig => {
            print!("{}", config.to_yaml());
            Ok(())
        }
        Command::Status { source, output } => {
            let index = load_index(&source).await?;
            let report = index.with_state(|state, _| StatusReport::once(state, &config));
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

/// Loads the index from the snapshot file, or from live watches once every kind has listed.
async fn load_index(source: &SourceArgs) -> anyhow::Result<SharedIndex> {
    if let Some(path) = &source.snapshot {
        return Ok(SharedIndex::from_state(file::load(path)?));
    }
    let client = live::client(source.kubeconfig.as_deref()).await?;
    let index = SharedIndex::default();
    let watches = tokio::spawn(live::watch_all(client, index.clone()));
    let deadline = tokio::time::Instant::now() + source.sync_timeout;
    while !index.is_synced() {
        if tokio::time::Instant::now() >= deadline {
            watches.abort();
            let missing: Vec<_> = index.unsynced().iter().map(|k| k.as_str()).collect();
            bail!(
                "the API server did not list {} within {:?}",
                missing.join(", "),
                source.sync_timeout
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    watches.abort();
    Ok(index)
}
