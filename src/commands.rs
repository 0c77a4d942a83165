//! The one-shot commands: `status`, `simulate`, `snapshot`, `certs` and `check-config`, each
//! with its own wiring (`serve` has `crate::serve`).

use std::{io::Write, path::Path};

use anyhow::Context;

use crate::{
    cli::{Output, SimPolicy, SourceArgs},
    clock::Clock,
    config::Config,
    decide::ghosts,
    proxmox::inventory::AttachedDisks,
    simulate::{self, Policy, Scenario},
    source::{self, Listing, Loaded, live},
    status::StatusReport,
};

fn print(text: &str) -> anyhow::Result<()> {
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("writing to stdout")
}

/// `headroom status`: one tick on the cluster as it is, with what Proxmox shows and what the
/// lease holder persisted — the inputs `serve`'s next tick would have.
pub async fn status(
    config: &Config,
    namespace: &str,
    source: &SourceArgs,
    output: Output,
) -> anyhow::Result<()> {
    let Loaded {
        index,
        watches,
        client,
    } = source::open(source, Listing::Wait).await?;
    if let Some(w) = &watches {
        w.abort();
    }
    // Proxmox is read without holding the index: only the attachment facts are taken.
    let observed = match &config.proxmox {
        Some(p) => {
            let attached = index.with_state(|s, _| AttachedDisks::from_state(s, &config.block_driver));
            Some(crate::provisioner::observe(p, &attached).await)
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
    let clock = Clock::system();
    let mut actuator = crate::provisioner::resumed_status(config, &in_flight, clock.now());
    // The windows and scale times serve persisted: the same inputs as its next tick.
    let record = crate::serve::load_durable(client.as_ref(), namespace).await;
    record.merge_status(&mut actuator);
    let mut windows = record.windows;
    let mut report = index.with_state(|s, _| {
        let mut report =
            StatusReport::observed(s, config, &drift.ghosts, &actuator, &mut windows, clock.now());
        report.ghost_repairs = ghosts::repairs(&drift.found, None, s, config, clock.now());
        report
    });
    report.provisioner.in_flight = in_flight
        .iter()
        .map(|v| format!("{} (VM {})", v.name, v.vmid))
        .collect();
    report.provisioner.error = error;
    print(&match output {
        Output::Json => report.to_json() + "\n",
        Output::Table => report.to_table(),
    })
}

/// What `simulate` is asked.
pub struct SimulateArgs<'a> {
    /// `--config` (or `HEADROOM_CONFIG`): wins over the scenario's own config.
    pub config_path: Option<&'a Path>,
    pub scenario: &'a Path,
    pub snapshot: Option<&'a Path>,
    pub policy: SimPolicy,
    pub output: Output,
    /// Both policies over time, drawn into this SVG file.
    pub plot: Option<&'a Path>,
}

/// `headroom simulate`: the scenario on its snapshot, under one policy (and, with a plot,
/// under the other too).
pub fn simulate(config: Config, args: SimulateArgs<'_>) -> anyhow::Result<()> {
    let SimulateArgs {
        config_path,
        scenario,
        snapshot,
        policy,
        output,
        plot,
    } = args;
    let (scenario_def, files) = Scenario::load(scenario)?;
    let Some(snapshot) = snapshot.map(Path::to_path_buf).or(files.snapshot) else {
        anyhow::bail!("{}: names no snapshot; pass --snapshot FILE", scenario.display());
    };
    let config = match (config_path, &files.config) {
        (None, Some(path)) => Config::load(Some(path))?,
        _ => config,
    };
    let state = source::file::load(&snapshot)?;
    let policy = match policy {
        SimPolicy::Proactive => Policy::Proactive,
        SimPolicy::Reactive => Policy::Reactive,
    };
    let Some(path) = plot else {
        return print_report(&simulate::run(&scenario_def, state, &config, policy), output);
    };
    let other = match policy {
        Policy::Proactive => Policy::Reactive,
        Policy::Reactive => Policy::Proactive,
    };
    let report = simulate::run_traced(&scenario_def, state.clone(), &config, policy);
    let other = simulate::run_traced(&scenario_def, state, &config, other);
    let (headroom, kproximate) = match policy {
        Policy::Proactive => (&report, &other),
        Policy::Reactive => (&other, &report),
    };
    let title = scenario.file_stem().map_or_else(
        || scenario.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    simulate::plot(
        path,
        &format!("{title}: headroom against kproximate"),
        headroom,
        kproximate,
    )?;
    eprintln!("wrote {}", path.display());
    print_report(&report, output)
}

fn print_report(report: &simulate::Report, output: Output) -> anyhow::Result<()> {
    print(&match output {
        Output::Json => serde_json::to_string_pretty(report)? + "\n",
        Output::Table => report.to_table(),
    })
}

/// `headroom snapshot`: what headroom reads of the live cluster, as a `List` (to `-`: stdout).
pub async fn snapshot(kubeconfig: Option<&Path>, context: Option<&str>, out: &Path) -> anyhow::Result<()> {
    let client = live::client(kubeconfig, context).await?;
    let list = live::snapshot(client).await?;
    let text = serde_json::to_string_pretty(&list)? + "\n";
    if out.as_os_str() == "-" {
        print(&text)
    } else {
        std::fs::write(out, text).with_context(|| format!("{}: cannot write", out.display()))
    }
}

/// `headroom completions SHELL`: the completion script for the shell, on stdout.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    use clap::CommandFactory;
    let mut text = Vec::new();
    clap_complete::generate(shell, &mut crate::cli::Args::command(), "headroom", &mut text);
    std::io::stdout().write_all(&text).context("writing to stdout")
}

/// `headroom certs`: the webhook's serving pair and CA, and a client pair per name.
pub fn certs(service: &str, namespace: &str, out: &Path, clients: &[String]) -> anyhow::Result<()> {
    let names = crate::certs::service_names(service, namespace);
    let written = crate::certs::write(out, names, clients)?;
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
