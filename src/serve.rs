//! `headroom serve`: the listeners, the watches, the planning loop, the actuator, the lease and
//! the event worker, started together and stopped together.

use std::{sync::Arc, time::Duration};

use anyhow::{Context, bail};
use tokio::{net::TcpListener, sync::watch};

use crate::{
    cli::ServeArgs,
    clock::Clock,
    config::Config,
    decide::actuation::ActuatorStatus,
    durable::{self, Durable},
    events::EventSink,
    provisioner::{Actuator, Persistence, Planned},
    read_model::ReadModel,
    server::{
        self,
        tls::{ClientTrust, Reload, ReloadingCert},
    },
    source::{self, Listing, Loaded},
};

/// The windows and scale times the lease holder recorded: none without a live cluster, or
/// when they cannot be read (then every window counts from now, as the warning says).
pub async fn load_durable(client: Option<&kube::Client>, namespace: &str) -> Durable {
    let Some(client) = client else {
        return Durable::default();
    };
    durable::Store::new(client.clone(), namespace)
        .load()
        .await
        .unwrap_or_else(|error| {
            tracing::warn!(%error, "reading the persisted windows failed; counting them from now");
            Durable::default()
        })
}

/// Runs until SIGTERM; `namespace` is where headroom runs (its Lease and windows).
pub async fn run(config: Config, namespace: String, args: ServeArgs) -> anyhow::Result<()> {
    let ServeArgs {
        source,
        listen,
        admin_listen,
        tls_cert,
        tls_key,
        tls_reload_interval,
        drain_timeout,
        plan_interval,
        max_connections,
    } = args;

    // Serving starts before the live source has synced: /readyz says when it has, and
    // kube-apiserver's failurePolicy Ignore covers the gap.
    let Loaded { index, client, .. } = source::open(&source, Listing::InBackground).await?;

    // A throw-away pair lives in a private directory that goes when the process does.
    let mut throw_away = None;
    let (cert, key) = match (tls_cert, tls_key) {
        (Some(c), Some(k)) => (c, k),
        _ if source.snapshot.is_some() => {
            let dir = crate::certs::private_temp_dir()?;
            throw_away = Some(dir.clone());
            let names = vec![
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
                "headroom".to_owned(),
            ];
            let written = crate::certs::write(&dir, names, &[])?;
            println!(
                "headroom: no --tls-cert/--tls-key; serving a throw-away certificate from {} (CA: {})",
                written.cert.display(),
                written.ca.display()
            );
            (written.cert, written.key)
        }
        _ => bail!("--tls-cert and --tls-key are required when serving a live cluster"),
    };
    let reloading = ReloadingCert::load(cert, key)?;
    let mut reloads: Vec<Arc<dyn Reload>> = vec![reloading.clone()];
    let clients = match &config.tls.client_ca_file {
        Some(ca) => {
            let trust = ClientTrust::load(ca.into(), config.tls.allowed_client_names.clone())?;
            reloads.push(trust.clone());
            tracing::info!(ca = %ca, allowed = ?config.tls.allowed_client_names, "client certificates required");
            Some(trust)
        }
        None => None,
    };
    let tls = server::tls::server_config(reloading, clients)?;

    let events = match &client {
        Some(client) => {
            let instance = std::env::var("POD_NAME").unwrap_or_else(|_| "headroom".into());
            EventSink::recording(
                client.clone(),
                kube::runtime::events::Reporter {
                    controller: "headroom".into(),
                    instance: Some(instance),
                },
            )
        }
        None => EventSink::logging(),
    };
    // Windows and scale times as the last process left them: a restart does not start a
    // `for:` window again.
    let store = client.clone().map(|c| durable::Store::new(c, &namespace));
    let record = load_durable(client.as_ref(), &namespace).await;
    let mut initial = ActuatorStatus::default();
    record.merge_status(&mut initial);
    // The actuator is the one writer of its status; handlers and the planner read it.
    let (status_tx, status_rx) = watch::channel(initial);
    let app = Arc::new(
        ReadModel::new(config, index, events)
            .with_client(client.clone())
            .with_actuator(status_rx.clone()),
    );
    let (stop_tx, stop_rx) = watch::channel(false);

    let tls_listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let admin_listener = TcpListener::bind(admin_listen)
        .await
        .with_context(|| format!("binding {admin_listen}"))?;
    tracing::info!(listen = %tls_listener.local_addr()?, admin = %admin_listener.local_addr()?, "serving");

    let router = server::routes(app.clone());
    let tls_server = tokio::spawn(server::serve_tls(
        tls_listener,
        tls,
        router,
        stop_rx.clone(),
        server::Limits::new(max_connections as usize, drain_timeout),
        app.metrics.connections.clone(),
    ));
    let mut admin_stop = stop_rx.clone();
    let admin_router = server::admin::admin_router(app.clone());
    let admin = tokio::spawn(async move {
        let stopped = async move {
            let _ = admin_stop.changed().await;
        };
        axum::serve(admin_listener, admin_router)
            .with_graceful_shutdown(stopped)
            .await
    });
    tokio::spawn(server::tls::watch(reloads, tls_reload_interval, stop_rx.clone()));

    // Provisioning: one planning loop, one actuator, the latest plan between them.
    let pve = match app.config.proxmox.as_ref() {
        Some(p) => Some(crate::provisioner::client(p)?),
        None => {
            tracing::info!("no proxmox section: provisioner in dry run");
            None
        }
    };
    // Only the Lease holder provisions; every replica serves.
    let (leading_tx, leading) = tokio::sync::watch::channel(client.is_none());
    if let Some(c) = &client {
        tokio::spawn(crate::lease::run(
            c.clone(),
            namespace.clone(),
            "headroom-provisioner".into(),
            crate::lease::identity(),
            crate::lease::Timings::default(),
            leading_tx,
        ));
    }
    let clock = Clock::system();
    let (plan_tx, plan_rx) = watch::channel(Planned::default());
    let actuator =
        Actuator::new(pve, app.clone(), client.clone(), status_tx, clock).with_leadership(leading.clone());
    let actuator_task = tokio::spawn(actuator.run(plan_rx));
    let planning = tokio::spawn(crate::provisioner::plan_loop(
        app.clone(),
        status_rx,
        plan_tx,
        record.windows,
        clock,
        plan_interval,
        store.map(|store| Persistence {
            store,
            leading: leading.clone(),
        }),
    ));

    server::shutdown_signal().await;
    planning.abort();
    actuator_task.abort();
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(drain_timeout + Duration::from_secs(1), tls_server).await;
    let _ = admin.await;
    if let Some(dir) = throw_away {
        let _ = std::fs::remove_dir_all(dir);
    }
    Ok(())
}
