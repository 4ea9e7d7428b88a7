//! The rules the operator and the node daemons must agree on, written once.
//!
//! The operator decides which VirtualService owns a VIP:port:protocol and says so in the
//! `Conflict` condition; the balancer daemons apply the same rule among the objects they see
//! (in the moments before the operator has spoken, and in standalone files where no operator
//! runs), and both select RealServers and balancer nodes by label. If the two sides ever
//! disagreed, a balancer would program a VirtualService the operator reports as conflicting, or
//! leave out one it reports as serving. So each of these rules lives here, and both sides call it:
//!
//! - [`ObjectKey`]: the namespace/name identity of an object;
//! - [`selects`]: label-selector matching, as the API server matches;
//! - [`ClaimKey`] and [`claim_keys`]: the VIP:port:protocol pairs a VirtualService asks for;
//! - [`seniority`], [`oldest_first`] and [`resolve`]: who keeps a contested claim (older
//!   creation time, then namespace/name; a loser claims nothing);
//! - [`vrid_clash`] and [`same_election`]: when two VirtualServices cannot share a VRID;
//! - [`pool_verdict`]: whether a VirtualService lies in a `VIPPolicy` pool its namespace may
//!   use (the chart's admission policy, for objects stored before the pools changed).
//!
//! Pure: no I/O, no clock, no Kubernetes client.

mod claim;
mod key;
mod pool;
mod selector;
mod vrid;

pub use claim::{
    ClaimKey, Claims, Outcome, Resolved, claim_keys, oldest_first, resolve, seniority,
};
pub use key::{DEFAULT_NAMESPACE, ObjectKey};
pub use pool::{PoolMiss, PoolRequest, cidr_contains, pool_verdict};
pub use selector::selects;
pub use vrid::{VridClash, same_election, vrid_clash};
