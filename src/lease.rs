//! Leader election with a `coordination.k8s.io/v1` Lease: only the holder provisions.
//!
//! Every replica serves the webhook and the extender from its own index; only one may change
//! Proxmox. The holder renews every `renew`; another replica takes over once the holder has
//! not renewed for `duration`. Writes carry the resourceVersion they read, so two replicas
//! racing for an expired lease cannot both win (the API server answers the loser 409).

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams};
use tokio::sync::watch;

/// Lease timings.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    pub duration: Duration,
    pub renew: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(15),
            renew: Duration::from_secs(5),
        }
    }
}

/// Who this replica is: the pod name, or the host name.
pub fn identity() -> String {
    std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| format!("headroom-{}", std::process::id()))
}

/// Tries to hold the lease forever; publishes whether this replica leads.
pub async fn run(
    client: Client,
    namespace: String,
    name: String,
    holder: String,
    timings: Timings,
    leading: watch::Sender<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    loop {
        let lead = match try_acquire(&api, &name, &holder, timings).await {
            Ok(lead) => lead,
            Err(error) => {
                tracing::warn!(%error, lease = %name, "lease update failed");
                // Unable to renew: act as a follower until we can prove we still lead.
                false
            }
        };
        if *leading.borrow() != lead {
            tracing::info!(lease = %name, holder = %holder, leading = lead, "leadership changed");
        }
        leading.send_replace(lead);
        tokio::time::sleep(timings.renew).await;
    }
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn spec(holder: &str, timings: Timings, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(holder.to_owned()),
        lease_duration_seconds: Some(timings.duration.as_secs() as i32),
        acquire_time: Some(acquired.unwrap_or_else(now)),
        renew_time: Some(now()),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}

/// One attempt: true when this replica holds the lease afterwards.
async fn try_acquire(
    api: &Api<Lease>,
    name: &str,
    holder: &str,
    timings: Timings,
) -> Result<bool, kube::Error> {
    let Some(mut lease) = api.get_opt(name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            spec: Some(spec(holder, timings, None, 0)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let current = lease.spec.clone().unwrap_or_default();
    let ours = current.holder_identity.as_deref() == Some(holder);
    let expired = match (&current.renew_time, current.lease_duration_seconds) {
        (Some(renewed), Some(secs)) => {
            let age = Timestamp::now().duration_since(renewed.0);
            age.as_secs() >= i64::from(secs)
        }
        _ => true,
    };
    if !ours && !expired {
        return Ok(false);
    }
    let transitions = current.lease_transitions.unwrap_or(0) + i32::from(!ours);
    let acquired = if ours { current.acquire_time } else { None };
    lease.spec = Some(spec(holder, timings, acquired, transitions));
    match api.replace(name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
