//! API version `lvstun.io/v1alpha1`.

mod real_server;
mod schema;
mod vip_policy;
mod virtual_service;

pub use real_server::{CheckStatus, RealServer, RealServerSpec, RealServerStatus};
pub use schema::{IPV4_RE, ipv4_rule};
pub use vip_policy::{VIPPolicy, VIPPolicySpec, VipPool};
pub use virtual_service::{
    BalancerStatus, Balancers, ExcludedRealServer, ExternalDeletions, HealthCheck, HttpCheck,
    KernelSettingRefusal, NodePriority, Persistence, Protocol, RefusedKernelSetting, Scheduler,
    ServicePort, TcpCheck, Tunnel, TunnelType, VirtualService, VirtualServiceSpec,
    VirtualServiceStatus, VrrpState,
};
