//! VIP ownership by VRRP version 3 (RFC 9568), the node daemon's side of it. The protocol
//! itself (codec, state machine, driver, VIP operations, the VRRP thread) is the crate
//! `lvstun-vrrp`, which knows nothing of Kubernetes; what stays here maps lvstun's objects and
//! command line onto it.
//!
//! - `run`: `run_with`, one virtual router with the real ops as a task on the VRRP thread (what
//!   the balancer role calls, `balancer::owner`), and the pure `priority_for`/`router_config`
//!   from a VirtualService's settings.
//! - `cli`: `lvstun-node vrrp ...`, a hidden lab command that runs the driver on a real
//!   interface and prints its decisions (for interop proofs against keepalived).

pub mod cli;
pub mod run;
