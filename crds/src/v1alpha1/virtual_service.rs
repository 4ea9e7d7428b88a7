//! The `VirtualService` kind: one VIP, its ports, how IPVS schedules connections to real servers,
//! how they are health-checked, and which nodes elect a balancer to hold the VIP.
//!
//! Every rule the API server can enforce lives here as a schema bound or a CEL rule, so a bad
//! object is refused at `kubectl apply` time with a message that names the field and the fix,
//! instead of reaching a daemon and being half-applied.

// kube-derive's `printcolumn(...)` repeats `type_ = "string"` per column by design; clippy reads
// the repeats as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema::{
    IPV4_RE, ipv4_rule, label_selector, node_name_rule, unicast_list_rule, unicast_rule,
};

/// Desired state of one virtual service: the VIP users connect to and everything needed to
/// forward their connections to healthy real servers.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "lvstun.io",
    version = "v1alpha1",
    kind = "VirtualService",
    namespaced,
    status = "VirtualServiceStatus",
    shortname = "lvsvc",
    category = "lvstun",
    printcolumn(name = "VIP", type_ = "string", json_path = ".spec.vip"),
    printcolumn(name = "Ports", type_ = "string", json_path = ".spec.ports[*].port"),
    printcolumn(name = "Scheduler", type_ = "string", json_path = ".spec.scheduler"),
    printcolumn(
        name = "Active",
        type_ = "string",
        json_path = ".status.activeBalancer"
    ),
    printcolumn(
        name = "Healthy",
        type_ = "string",
        json_path = ".status.healthySummary"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.balancers.unicastPeers) || !(self.vip in self.balancers.unicastPeers)"
).message("spec.balancers.unicastPeers lists the VIP itself: list the other balancer nodes' own addresses, never the VIP"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.hashClientPort) || !self.hashClientPort || self.scheduler in ['sh', 'mh']"
).message("spec.hashClientPort applies only to the hashing schedulers: set spec.scheduler to mh or sh, or remove spec.hashClientPort"))]
pub struct VirtualServiceSpec {
    /// The virtual IP clients connect to. IPv4 only for now (ipip carries IPv4).
    #[x_kube(validation = ipv4_rule("spec.vip", "192.0.2.100"))]
    #[x_kube(validation = unicast_rule("spec.vip", "a VIP", "192.0.2.100"))]
    #[schemars(length(max = 15))]
    pub vip: String,

    /// The ports served on the VIP; each port/protocol pair at most once.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = kube::core::Rule::new(
        "self.all(p, self.filter(q, q.port == p.port && q.protocol == p.protocol).size() == 1)"
    ).message("spec.ports: each port/protocol pair may appear only once; remove the duplicate entry"))]
    pub ports: Vec<ServicePort>,

    /// The IPVS scheduler, named as the kernel names it. `mh` keeps every connection across a
    /// VIP move (failover, upgrade), even one opened a moment before it: each balancer picks
    /// the same real server for it. The others rely on the connection sync, which carries a
    /// connection a moment after it starts, so one in flight at the move can be reset.
    #[serde(default)]
    pub scheduler: Scheduler,

    /// `sh` and `mh` only: hash the client's port with its address (the kernel's `sh-port` /
    /// `mh-port`), so one client's connections spread over the real servers instead of all
    /// going to the same one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hash_client_port: bool,

    /// Client affinity: connections from one client go to the same real server for this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence: Option<Persistence>,

    /// How the balancer encapsulates packets towards real servers.
    #[serde(default)]
    pub tunnel: Tunnel,

    /// Selects the `RealServer`s (in this namespace) that serve this VIP.
    #[schemars(schema_with = "label_selector")]
    pub real_server_selector: LabelSelector,

    /// How balancers decide that a real server is alive. Defaults to the classic recipe:
    /// GET `/healthcheck.html` expecting `OK`, every 2 seconds.
    #[serde(default)]
    pub health_check: HealthCheck,

    /// Which nodes act as balancers for this VIP and how they elect the one that holds it.
    pub balancers: Balancers,
}

/// One port on the VIP.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// The port clients connect to (1..65535).
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Transport protocol.
    #[serde(default)]
    pub protocol: Protocol,
}

/// Transport protocol of a virtual service port.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum Protocol {
    /// TCP (the default).
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
}

/// IPVS scheduling algorithms, spelled as the kernel's `ip_vs_<name>` modules.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    /// Round robin (the classic recipe's choice).
    #[default]
    Rr,
    /// Weighted round robin.
    Wrr,
    /// Least connections.
    Lc,
    /// Weighted least connections.
    Wlc,
    /// Locality-based least connections.
    Lblc,
    /// Locality-based least connections with replication.
    Lblcr,
    /// Destination hashing.
    Dh,
    /// Source hashing.
    Sh,
    /// Shortest expected delay.
    Sed,
    /// Never queue.
    Nq,
    /// Weighted failover.
    Fo,
    /// Weighted overflow.
    Ovf,
    /// Maglev hashing: every balancer picks the same real server for a flow, so flows survive
    /// a failover without shared state.
    Mh,
    /// Power of two choices.
    Twos,
}

impl Scheduler {
    /// The name the kernel and `ipvsadm -s` use.
    pub fn kernel_name(self) -> &'static str {
        match self {
            Scheduler::Rr => "rr",
            Scheduler::Wrr => "wrr",
            Scheduler::Lc => "lc",
            Scheduler::Wlc => "wlc",
            Scheduler::Lblc => "lblc",
            Scheduler::Lblcr => "lblcr",
            Scheduler::Dh => "dh",
            Scheduler::Sh => "sh",
            Scheduler::Sed => "sed",
            Scheduler::Nq => "nq",
            Scheduler::Fo => "fo",
            Scheduler::Ovf => "ovf",
            Scheduler::Mh => "mh",
            Scheduler::Twos => "twos",
        }
    }
}

/// Client persistence (`ipvsadm -p`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Persistence {
    /// How long a client stays with its real server after its last connection (1 s .. 31 days).
    #[schemars(range(min = 1, max = 2678400))]
    pub timeout_seconds: i32,
}

/// Encapsulation from balancer to real server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.type == 'gue' || !has(self.port)")
    .message("spec.tunnel.port applies only to type gue; remove it or set type: gue"))]
pub struct Tunnel {
    /// Tunnel type; `ipip` is the classic recipe and what `tunl0` decapsulates.
    #[serde(default, rename = "type")]
    pub kind: TunnelType,
    /// UDP port of the GUE decapsulation listener on real servers (GUE only; default 6080).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

/// Tunnel types the kernel's IPVS can encapsulate with.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
#[serde(rename_all = "lowercase")]
pub enum TunnelType {
    /// IP-in-IP (protocol 4), decapsulated by `tunl0`.
    #[default]
    Ipip,
    /// Generic UDP encapsulation (the `fou` module on real servers).
    Gue,
    /// GRE.
    Gre,
}

/// Health checking of real servers, done by every balancer of the VIP.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.http) != has(self.tcp)")
    .message("spec.healthCheck needs exactly one of http or tcp"))]
#[x_kube(validation = kube::core::Rule::new("self.timeoutSeconds <= self.intervalSeconds")
    .message("spec.healthCheck.timeoutSeconds must not be larger than intervalSeconds; lower the timeout or raise the interval"))]
pub struct HealthCheck {
    /// HTTP GET check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheck>,
    /// TCP connect check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpCheck>,
    /// Seconds between checks of one real server.
    #[serde(default = "default_interval")]
    #[schemars(range(min = 1, max = 3600))]
    pub interval_seconds: i32,
    /// Seconds one check may take before it counts as failed.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: i32,
    /// Consecutive failures before a server loses its weight.
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: i32,
    /// Consecutive successes before a failed server regains its weight.
    #[serde(default = "default_success_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub success_threshold: i32,
}

fn default_interval() -> i32 {
    2
}
fn default_timeout() -> i32 {
    1
}
fn default_failure_threshold() -> i32 {
    2
}
fn default_success_threshold() -> i32 {
    1
}

impl Default for HealthCheck {
    /// The classic ldirectord check: GET `/healthcheck.html`, expect `OK`, every 2 seconds.
    fn default() -> Self {
        HealthCheck {
            http: Some(HttpCheck::default()),
            tcp: None,
            interval_seconds: default_interval(),
            timeout_seconds: default_timeout(),
            failure_threshold: default_failure_threshold(),
            success_threshold: default_success_threshold(),
        }
    }
}

/// HTTP GET health check against the real server's own address.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HttpCheck {
    /// Request path; must start with `/`.
    #[serde(default = "default_path")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = kube::core::Rule::new("self.startsWith('/')")
        .message("spec.healthCheck.http.path must start with '/', e.g. /healthcheck.html"))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[!-~]*$')")
        .message("spec.healthCheck.http.path must be printable ASCII without spaces or control characters; percent-encode them, e.g. /health%20check"))]
    pub path: String,
    /// Port to check; defaults to the real server's port (or the service port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// Expected HTTP status code.
    #[serde(default = "default_expect_status")]
    #[schemars(range(min = 100, max = 599))]
    pub expect_status: i32,
    /// A substring the response body must contain; empty means any body.
    #[serde(default = "default_expect_body")]
    #[schemars(length(max = 1024))]
    pub expect_body: String,
    /// `Host` header to send; defaults to the real server's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:[0-9]{1,5})?$')")
        .message("spec.healthCheck.http.host must be a host name or IPv4 address with an optional :port, without spaces or control characters, e.g. www.example.com"))]
    pub host: Option<String>,
}

fn default_path() -> String {
    "/healthcheck.html".to_string()
}
fn default_expect_status() -> i32 {
    200
}
fn default_expect_body() -> String {
    "OK".to_string()
}

impl Default for HttpCheck {
    fn default() -> Self {
        HttpCheck {
            path: default_path(),
            port: None,
            expect_status: default_expect_status(),
            expect_body: default_expect_body(),
            host: None,
        }
    }
}

/// TCP connect health check.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TcpCheck {
    /// Port to connect to; defaults to the real server's port (or the service port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

/// The balancer nodes of a VIP and their VRRP election settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Balancers {
    /// Nodes whose labels match run a balancer for this VIP. Only nodes that also carry the
    /// balancer label the admin chose (chart value `balancer.nodeSelector`, default
    /// `lvstun.io/balancer=true`) run the balancer daemon; others are reported in `Degraded`.
    #[schemars(schema_with = "label_selector")]
    pub node_selector: LabelSelector,
    /// Interface that carries the VIP; defaults to the interface that routes to the VIP's subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 15))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[A-Za-z0-9_.-]+$')")
        .message("spec.balancers.interface must be a Linux interface name (at most 15 characters of letters, digits, '_', '.', '-')"))]
    pub interface: Option<String>,
    /// VRRP virtual router ID, unique per VIP on a segment (1..255).
    #[serde(rename = "virtualRouterID")]
    #[schemars(range(min = 1, max = 255))]
    pub virtual_router_id: i32,
    /// VRRP advertisement interval (10 ms .. 40 s, in steps of 10 ms as VRRPv3 counts centiseconds).
    #[serde(default = "default_advert_interval")]
    #[schemars(range(min = 10, max = 40000))]
    #[x_kube(validation = kube::core::Rule::new("self % 10 == 0")
        .message("spec.balancers.advertIntervalMilliseconds must be a multiple of 10 (VRRPv3 counts centiseconds)"))]
    pub advert_interval_milliseconds: i32,
    /// Whether a higher-priority balancer takes the VIP back from a lower-priority Master.
    #[serde(default = "default_true")]
    pub preempt: bool,
    /// Seconds a returning higher-priority balancer waits before preempting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub preempt_delay_seconds: Option<i32>,
    /// Advertisements a Backup must miss before it takes the VIP over (1..10, default 3):
    /// Master_Down_Interval = missedAdvertisements × advertisement interval + Skew_Time.
    /// 3 is the factor RFC 9568 fixes; on a lossy segment a larger value trades a slower
    /// takeover for fewer spurious ones (with independent loss p, a spurious takeover needs
    /// this many losses in a row, about p^n per interval). Beyond 10 a longer interval says
    /// the same with less traffic.
    #[serde(default = "default_missed_advertisements")]
    #[schemars(range(min = 1, max = 10))]
    pub missed_advertisements: i32,
    /// Per-node priority overrides (1..254). Other nodes get priorities by node name order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = kube::core::Rule::new(
        "self.all(p, self.filter(q, q.nodeName == p.nodeName).size() == 1)"
    ).message("spec.balancers.priorities: a node appears more than once; give each node one entry"))]
    pub priorities: Vec<NodePriority>,
    /// Peers to advertise to by unicast, for networks that drop multicast.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 15)))]
    #[x_kube(validation = kube::core::Rule::new(format!("self.all(a, a.matches('{IPV4_RE}'))"))
        .message("spec.balancers.unicastPeers must be IPv4 addresses such as 192.0.2.12"))]
    #[x_kube(validation = unicast_list_rule("spec.balancers.unicastPeers", "VRRP peers", "192.0.2.12"))]
    pub unicast_peers: Vec<String>,
}

fn default_advert_interval() -> i32 {
    1000
}
/// RFC 9568 §6.1: Master_Down_Interval is three advertisement intervals plus Skew_Time.
fn default_missed_advertisements() -> i32 {
    3
}
fn default_true() -> bool {
    true
}

/// A fixed VRRP priority for one node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NodePriority {
    /// Node name.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = node_name_rule("spec.balancers.priorities: nodeName"))]
    pub node_name: String,
    /// VRRP priority (1..254; 255 is reserved for address owners, which lvstun never is).
    #[schemars(range(min = 1, max = 254))]
    pub priority: i32,
}

/// Observed state of a virtual service, folded by the operator from the balancers' reports.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceStatus {
    /// The generation the operator last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `VIPActive`, `Degraded`, `Conflict`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Node that holds the VIP now (VRRP Master).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_balancer: Option<String>,
    /// Real servers that pass health checks and are tunnel-ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_real_servers: Option<i32>,
    /// Real servers selected by this VirtualService.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_real_servers: Option<i32>,
    /// `healthy/total`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_summary: Option<String>,
    /// One entry per balancer node; each balancer daemon server-side-applies only its own entry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["node".into()]))]
    pub balancers: Vec<BalancerStatus>,
    /// Selected RealServers the operator left out of this VIP (reason `NodeIsBalancer`: their
    /// `spec.nodeName` is one of this VirtualService's balancer nodes). Written by the operator;
    /// the balancers program no destination for them and their web daemons do not hold this VIP
    /// for them (ADR 0009).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub excluded_real_servers: Vec<ExcludedRealServer>,
}

/// A RealServer the operator left out of a VirtualService, and why.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct ExcludedRealServer {
    /// The RealServer's name (in the VirtualService's namespace).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Its `spec.nodeName`, when it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub node: Option<String>,
    /// Why, a CamelCase reason: `NodeIsBalancer` (its node is one of the VirtualService's
    /// balancer nodes) or `AddressIsVIP` (its `spec.address` is the VIP).
    #[schemars(length(min = 1, max = 64))]
    pub reason: String,
}

/// One balancer node's report for a VIP.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BalancerStatus {
    /// The node this entry belongs to.
    pub node: String,
    /// VRRP state of this node for the VIP.
    pub state: VrrpState,
    /// The node's VRRP priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// When `state` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// Destinations with weight > 0 programmed in this node's IPVS table, per port.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub programmed_destinations: BTreeMap<String, i32>,
    /// Human-readable detail (errors while programming, etc.).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Kernel settings this node wants but could not make (the `net.ipv4.vs` sysctls); empty
    /// when every one holds its wanted value. The operator turns a non-empty list into
    /// `Degraded=True` with reason `KernelSettingRefused`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub refused_kernel_settings: Vec<RefusedKernelSetting>,
    /// IPVS services of this VirtualService that this node had programmed and then found
    /// deleted by another program (kube-proxy in IPVS mode deletes every service whose address
    /// is not in its `ipvs.excludeCIDRs`); absent when none was, for a while. The balancer
    /// re-adds them; the operator turns this into `Degraded=True` with reason
    /// `IPVSServiceDeletedExternally`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_externally: Option<ExternalDeletions>,
}

/// Services a balancer found deleted behind its back, within the last few minutes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalDeletions {
    /// The ports whose service was found deleted, as `80/TCP`.
    #[schemars(length(max = 64))]
    pub ports: Vec<String>,
    /// How many times a service was found deleted since the first of these deletions.
    pub count: i32,
    /// When the last one was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_time: Option<Time>,
}

/// A kernel setting a balancer could not make on its node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct RefusedKernelSetting {
    /// The sysctl's full name, e.g. `net.ipv4.vs.sloppy_tcp`.
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    /// The value lvstun wants.
    pub wanted: i64,
    /// The value the node holds now; absent when it could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<i64>,
    /// Why the write failed, decided from the error number.
    pub reason: KernelSettingRefusal,
}

/// Why a kernel setting could not be made (a fixed set, so it can label a metric).
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
pub enum KernelSettingRefusal {
    /// The sysctl is on a read-only mount (EROFS): a container's `/proc/sys`.
    ReadOnly,
    /// The kernel refused the write (EACCES, EPERM): no `CAP_NET_ADMIN` over the node's
    /// network namespace.
    PermissionDenied,
    /// The sysctl does not exist (ENOENT): `ip_vs` is not loaded, or the directory the daemon
    /// was given is not the kernel's.
    NotFound,
    /// Any other error; the balancer's log has it.
    Other,
}

impl KernelSettingRefusal {
    /// Every refusal, for the vocabulary in [`crate::conditions`].
    pub const ALL: &'static [KernelSettingRefusal] = &[
        KernelSettingRefusal::ReadOnly,
        KernelSettingRefusal::PermissionDenied,
        KernelSettingRefusal::NotFound,
        KernelSettingRefusal::Other,
    ];

    /// The reason as written in the API and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            KernelSettingRefusal::ReadOnly => "ReadOnly",
            KernelSettingRefusal::PermissionDenied => "PermissionDenied",
            KernelSettingRefusal::NotFound => "NotFound",
            KernelSettingRefusal::Other => "Other",
        }
    }
}

/// VRRP states (RFC 5798 section 6.4) plus `Fault` for a node that cannot take part.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum VrrpState {
    /// Starting up.
    Initialize,
    /// Standing by.
    Backup,
    /// Holding the VIP.
    Master,
    /// Cannot take part (interface down, VIP cannot be programmed).
    Fault,
}
