//! headroom: keeps block-PVC and memory headroom on Proxmox-backed Kubernetes clusters.

pub mod cli;
pub mod config;
pub mod decide;
pub mod index;
pub mod model;
pub mod source;
pub mod status;
