//! headroom: keeps block-PVC and memory headroom on Proxmox-backed Kubernetes clusters.

pub mod certs;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod decide;
pub mod drain;
pub mod durable;
pub mod events;
pub mod index;
pub mod lease;
pub mod ledger;
pub mod metrics;
pub mod model;
pub mod provisioner;
pub mod proxmox;
pub mod read_model;
pub mod serve;
pub mod server;
pub mod shared_index;
pub mod simulate;
pub mod source;
pub mod status;
