//! The balancer role (`lvstun-node balancer`): from the VirtualService and RealServer objects
//! to the kernel's IPVS table, with health checks deciding weights.
//!
//! - [`desired`] (pure): which services, destinations and health checks this node wants;
//! - [`plan`] (pure, the IPVS crate's `lvstun_ipvs::plan`): the fewest operations from the
//!   kernel's table to the desired one;
//! - [`foreign`] (pure): services lvstun programmed that another program deleted;
//! - [`pass`] (pure): the deciding and settling halves of one pass of the loop;
//! - [`refusal`] (pure): what the kernel refused, and how long the same operation waits;
//! - [`run`]: the loop (source → desired → plan → apply) over the
//!   [`IpvsTable`](lvstun_ipvs::IpvsTable) and health seams, so it runs against the real kernel
//!   or in-memory fakes alike;
//! - [`state`]: the record of owned VIPs (file I/O);
//! - [`http`]: `/healthz`, `/readyz`, `/metrics`;
//! - [`report`]: in a cluster, this node's entries in the objects' status;
//! - [`vips`] (pure): which VRRP virtual routers this node runs for its VIPs;
//! - [`owner`]: VIP ownership, one VRRP router per VIP, supervised (I/O);
//! - [`teardown`]: removing everything the records say lvstun put in the kernel (ADR 0008);
//! - [`daemon`]: the command line and the wiring.

pub mod daemon;
pub mod desired;
pub mod foreign;
pub mod http;
pub mod owner;
pub mod pass;
pub mod refusal;
pub mod report;
pub mod run;
pub mod state;
pub mod teardown;
pub mod vips;

/// The planner lives with the IPVS crate (`lvstun_ipvs::plan`); named here as well, so the
/// balancer's modules and callers keep saying `balancer::plan`.
pub use lvstun_ipvs::plan;
