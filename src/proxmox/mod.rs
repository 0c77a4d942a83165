//! Proxmox VE: the API client and what headroom reads and does through it.

pub mod client;
pub mod inventory;
pub mod tls;
