//! The two node DaemonSets as data: the balancer DaemonSet runs `lvstun-node balancer` and the
//! web DaemonSet runs `lvstun-node web` on the nodes matching the role's node selector from the
//! chart's values (by default `lvstun.io/balancer: "true"` and `lvstun.io/web: "true"`), with
//! the role's tolerations from the chart. The admin decides which nodes run these root-level
//! agents, not a tenant's CR, and no CR change ever touches a pod template (ADR 0007).
//!
//! Pure: the same configuration gives byte-identical objects, so re-applying them is a no-op for
//! the API server and `metadata.generation` only moves when the configuration changed (an
//! operator upgrade or new chart values). The objects carry a hash of themselves so the
//! applier can skip unchanged ones without a request.
//!
//! The pods get what the daemons need and nothing more: host networking (they program the
//! node's own network stack), `NET_ADMIN` and `NET_RAW` (IPVS and addresses over netlink, VRRP and
//! gratuitous ARP over raw sockets), and for the balancer `SYS_NICE` (its VRRP thread runs
//! SCHED_RR), with every other capability dropped, not privileged, a read-only root filesystem.
//!
//! The balancer pod also gets the node's `/proc/sys/net/ipv4/vs` mounted outside `/proc` (the
//! runtime keeps the container's `/proc/sys` read-only and refuses mounts inside `/proc`), and
//! an init container, `balancer prepare` with no capability at all, that loads `ip_vs` so that
//! directory exists when the balancer container starts (ADR 0005).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, HostPathVolumeSource, ObjectFieldSelector, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecurityContext, Toleration,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::error::Error;

/// Annotation holding [`config_hash`] of the applied object.
pub const HASH_ANNOTATION: &str = "lvstun.io/config-hash";
/// Where the daemons record what they changed on the host (`lvstun-node --state-dir` default),
/// mounted from the host.
pub const STATE_DIR: &str = "/run/lvstun";
/// The state folder's subpath in the node's [`STATE_DIR`]: one per node name (`NODE_NAME` is
/// the container's `spec.nodeName`).
pub const STATE_SUBPATH: &str = "$(NODE_NAME)";
/// The node's IPVS sysctls, mounted into the balancer container at [`IPVS_SYSCTL_MOUNT`].
pub const IPVS_SYSCTL_HOST_DIR: &str = lvstun_crds::kernel_settings::HOST_DIR;
/// Where the balancer container sees the node's IPVS sysctls (`--ipvs-sysctl-dir`): outside
/// `/proc`, where the runtime allows the mount and leaves it writable.
pub const IPVS_SYSCTL_MOUNT: &str = "/host/proc/sys/net/ipv4/vs";
/// Name of the volume and of the mount of [`IPVS_SYSCTL_HOST_DIR`].
pub const IPVS_SYSCTL_VOLUME: &str = "ipvs-sysctl";
/// Name of the balancer pod's init container, which runs `lvstun-node balancer prepare`.
pub const PREPARE_CONTAINER: &str = "prepare";
/// `app.kubernetes.io/managed-by` value on everything the operator creates.
pub const MANAGED_BY: &str = "lvstun-operator";
/// Label naming the operator installation (its lease name) that owns an object, so two
/// installations never touch each other's DaemonSets.
pub const OPERATOR_LABEL: &str = "lvstun.io/operator";

/// The two node daemon roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// IPVS, health checks, VRRP.
    Balancer,
    /// tunl0 decapsulation, VIPs, ARP suppression.
    Web,
}

impl Role {
    /// Both roles, in a fixed order.
    pub const ALL: [Role; 2] = [Role::Balancer, Role::Web];

    /// The `lvstun-node` subcommand, container name and component label.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Balancer => "balancer",
            Role::Web => "web",
        }
    }
}

/// How one role's DaemonSet is named and run.
#[derive(Debug, Clone, PartialEq)]
pub struct RoleConfig {
    /// DaemonSet name (by default the role's ServiceAccount name, `<fullname>-balancer` /
    /// `<fullname>-web`, as the chart names everything after its fullname).
    pub daemonset_name: String,
    /// ServiceAccount of the pods (the chart binds the role's ClusterRole to it).
    pub service_account: String,
    /// Port of the daemon's `/healthz` and `/readyz` (on the host network).
    pub health_port: i32,
    /// The pods' `nodeSelector`: the nodes the admin chose for this role (chart value
    /// `<role>.nodeSelector`). Empty: every node.
    pub node_selector: BTreeMap<String, String>,
    /// The pods' tolerations (chart value `<role>.tolerations`), in the order given. The
    /// DaemonSet controller adds the node-condition tolerations (not-ready, unreachable,
    /// pressure, unschedulable) to every daemon pod itself.
    pub tolerations: Vec<Toleration>,
}

/// Everything about the node DaemonSets that comes from the operator's command line.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeDaemonConfig {
    /// Namespace of the DaemonSets (the operator's own).
    pub namespace: String,
    /// The installation's identity (the lease name), put in [`OPERATOR_LABEL`].
    pub instance: String,
    /// `lvstun-node` image reference.
    pub image: String,
    /// `Always`, `IfNotPresent` or `Never`.
    pub image_pull_policy: String,
    /// `json` or `text`, passed on to the daemons.
    pub log_format: String,
    /// The balancer DaemonSet.
    pub balancer: RoleConfig,
    /// The web DaemonSet.
    pub web: RoleConfig,
    /// The web daemons' `--vip-device` (chart value `web.vipDevice`); `None` leaves the
    /// daemon's default and the argument out.
    pub web_vip_device: Option<String>,
}

impl NodeDaemonConfig {
    /// The configuration of one role.
    pub fn role(&self, role: Role) -> &RoleConfig {
        match role {
            Role::Balancer => &self.balancer,
            Role::Web => &self.web,
        }
    }
}

/// The desired DaemonSet of each role. Both always exist while the operator runs, and each
/// depends on the operator's configuration alone (the chart's values), never on a
/// VirtualService or RealServer: a CR change then never changes a pod template, so it never
/// makes the DaemonSet controller replace a pod, and never costs a balancer Master a failover
/// (ADR 0007). Which VIPs and RealServers concern a node is decided by the daemon on it.
pub fn daemonsets(cfg: &NodeDaemonConfig) -> Result<BTreeMap<Role, DaemonSet>, Error> {
    Role::ALL
        .iter()
        .map(|role| Ok((*role, daemonset(cfg, *role)?)))
        .collect()
}

/// Whether a node with these labels runs the daemon of a role: it matches the role's
/// chart-configured node selector (every pair present with that value; an empty selector
/// matches every node), as the DaemonSet's `nodeSelector` decides for the scheduler.
pub fn runs_daemon(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The labels a node must carry to run a role's daemon, as `kubectl label node` takes them
/// (`key=value`, space separated): the fix a condition or Event gives for a node that lacks them.
pub fn label_arguments(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Labels of the DaemonSet's pods that select them (immutable once created: keep them few).
pub fn selector_labels(cfg: &NodeDaemonConfig, role: Role) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "lvstun-node".into()),
        ("app.kubernetes.io/component".into(), role.as_str().into()),
        (
            "app.kubernetes.io/instance".into(),
            cfg.role(role).daemonset_name.clone(),
        ),
    ])
}

/// Every label of a DaemonSet and its pods.
pub fn labels(cfg: &NodeDaemonConfig, role: Role) -> BTreeMap<String, String> {
    let mut l = selector_labels(cfg, role);
    l.insert("app.kubernetes.io/part-of".into(), "lvstun".into());
    l.insert("app.kubernetes.io/managed-by".into(), MANAGED_BY.into());
    l.insert(OPERATOR_LABEL.into(), cfg.instance.clone());
    l
}

/// The label selector that finds this installation's DaemonSets.
pub fn owned_selector(cfg: &NodeDaemonConfig) -> String {
    format!(
        "app.kubernetes.io/managed-by={MANAGED_BY},{OPERATOR_LABEL}={}",
        cfg.instance
    )
}

fn quantity(s: &str) -> Quantity {
    Quantity(s.to_string())
}

/// The exact arguments given to `lvstun-node`; the node daemon must accept them (pinned on
/// that side by `the_operators_arguments_parse` in `node-daemon/src/balancer/daemon.rs` and
/// `node-daemon/src/web/mod.rs`: change those with this).
pub fn node_args(cfg: &NodeDaemonConfig, role: Role) -> Vec<String> {
    let mut args = vec![
        role.as_str().to_string(),
        "--node-name=$(NODE_NAME)".to_string(),
        format!("--health-port={}", cfg.role(role).health_port),
        // Loopback for the kubelet's probes, the node's own address for scrapes; never
        // 0.0.0.0, which on a Master includes the public VIP (issue 15).
        "--health-address=127.0.0.1".to_string(),
        "--health-address=$(NODE_IP)".to_string(),
        format!("--log-format={}", cfg.log_format),
    ];
    if role == Role::Balancer {
        args.push(format!("--ipvs-sysctl-dir={IPVS_SYSCTL_MOUNT}"));
    }
    // At SIGTERM the daemon reads its own DaemonSet (in $POD_NAMESPACE) and Node to tell a
    // restart (keep the node as it is) from its end on this node (tear down), ADR 0008.
    args.push(format!("--daemonset={}", cfg.role(role).daemonset_name));
    if role == Role::Web
        && let Some(dev) = &cfg.web_vip_device
    {
        args.push(format!("--vip-device={dev}"));
    }
    args
}

/// Seconds a daemon pod has between SIGTERM and SIGKILL. What it does in that time (ADR 0008):
/// the VRRP handover (at most 5 s, `SHUTDOWN_LIMIT` in the balancer) and, at the same time, the
/// exit decision (at most 3 s of API reads); then, when tearing down, a few netlink requests
/// (one per lvstun IPVS service, batched: well under a second for a thousand), one `nft` run
/// and a few small file writes. About 6 s in the worst case; 30 leaves room for a slow node.
pub const TERMINATION_GRACE_SECONDS: i64 = 30;

/// The capabilities a daemon's container adds back (every other one is dropped): NET_ADMIN and
/// NET_RAW for both (netlink, raw sockets); SYS_NICE for the balancer, whose VRRP thread runs
/// SCHED_RR so that a busy node cannot delay its advertisements past Master_Down_Interval
/// (crates/lvstun-vrrp/src/thread.rs).
pub fn capabilities(role: Role) -> &'static [&'static str] {
    match role {
        Role::Balancer => &["NET_ADMIN", "NET_RAW", "SYS_NICE"],
        Role::Web => &["NET_ADMIN", "NET_RAW"],
    }
}

/// The arguments of the balancer pod's init container (pinned on the daemon's side by
/// `prepare_takes_no_arguments` in `node-daemon/src/balancer/daemon.rs`).
pub fn prepare_args() -> Vec<String> {
    vec![Role::Balancer.as_str().to_string(), "prepare".to_string()]
}

/// Not privileged, no privilege escalation, read-only root, root user, every capability
/// dropped and `add` added back: the one security context of every lvstun container.
fn security_context(add: &[&str]) -> SecurityContext {
    SecurityContext {
        privileged: Some(false),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        // Capabilities added to a container reach a non-root process only through file
        // capabilities, which a read-only, minimal image should not depend on; root with
        // everything but two capabilities dropped is the smaller grant.
        run_as_user: Some(0),
        run_as_non_root: Some(false),
        capabilities: Some(Capabilities {
            add: (!add.is_empty()).then(|| add.iter().map(|c| (*c).to_string()).collect()),
            drop: Some(vec!["ALL".into()]),
        }),
        ..Default::default()
    }
}

/// The balancer pod's init container: `lvstun-node balancer prepare` loads `ip_vs` (asking the
/// kernel for the IPVS generic netlink family autoloads it) so that the node's
/// `/proc/sys/net/ipv4/vs`, which the balancer container mounts, exists before that container
/// is created. The request is not admin-only and the kernel loads the module itself, so it runs
/// with no capability.
fn prepare_container(cfg: &NodeDaemonConfig) -> Container {
    Container {
        name: PREPARE_CONTAINER.into(),
        image: Some(cfg.image.clone()),
        image_pull_policy: Some(cfg.image_pull_policy.clone()),
        args: Some(prepare_args()),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), quantity("10m")),
                ("memory".into(), quantity("16Mi")),
            ])),
            limits: Some(BTreeMap::from([("memory".into(), quantity("64Mi"))])),
            ..Default::default()
        }),
        security_context: Some(security_context(&[])),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: path.into(),
            }),
            ..Default::default()
        }),
    }
}

/// How long the kubelet waits for a daemon's `/healthz` answer.
const LIVENESS_TIMEOUT_SECONDS: i32 = 5;
/// How many `/healthz` answers in a row may be missing before the kubelet restarts a daemon.
const LIVENESS_FAILURES: i32 = 6;

fn probe(path: &str, port: i32, period: i32) -> Probe {
    Probe {
        // The kubelet shares the host network namespace with these pods, so it reaches the
        // daemon on loopback: the health endpoint need not listen on the node's public addresses.
        http_get: Some(HTTPGetAction {
            host: Some("127.0.0.1".into()),
            path: Some(path.into()),
            port: IntOrString::Int(port),
            ..Default::default()
        }),
        initial_delay_seconds: Some(5),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

fn container(cfg: &NodeDaemonConfig, role: Role) -> Container {
    let port = cfg.role(role).health_port;
    // The balancer holds IPVS tables and health-check state for every VIP; the web daemon only
    // keeps a few addresses and sysctls.
    let (cpu, memory, memory_limit) = match role {
        Role::Balancer => ("50m", "32Mi", "256Mi"),
        Role::Web => ("10m", "16Mi", "64Mi"),
    };
    Container {
        name: role.as_str().into(),
        image: Some(cfg.image.clone()),
        image_pull_policy: Some(cfg.image_pull_policy.clone()),
        args: Some(node_args(cfg, role)),
        env: Some(vec![
            field_env("NODE_NAME", "spec.nodeName"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
            field_env("NODE_IP", "status.hostIP"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("health".into()),
            container_port: port,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        // Liveness restarts a daemon that is wedged, not one that is slow: a node starved of
        // CPU (seen in the pod lab: three image imports at once on two vCPUs) answered late
        // three times in a row, and the kubelet killed the VIP's Master. Five seconds per
        // answer and six misses (a minute) before a restart.
        liveness_probe: Some(Probe {
            timeout_seconds: Some(LIVENESS_TIMEOUT_SECONDS),
            failure_threshold: Some(LIVENESS_FAILURES),
            ..probe("/healthz", port, 10)
        }),
        readiness_probe: Some(match role {
            // The balancer's /readyz is the rolling update's gate: it turns ready once the node
            // could take the VIP without losing a flow (the IPVS table is the desired one, the
            // health checks settled, the backup sync daemon warmed up), and the DaemonSet
            // controller stops the next node's pod only after that. Probed every second, so the
            // gate opens within a second of the daemon's verdict, not up to five later.
            Role::Balancer => Probe {
                initial_delay_seconds: Some(1),
                ..probe("/readyz", port, BALANCER_READINESS_PERIOD)
            },
            Role::Web => probe("/readyz", port, 5),
        }),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), quantity(cpu)),
                ("memory".into(), quantity(memory)),
            ])),
            limits: Some(BTreeMap::from([("memory".into(), quantity(memory_limit))])),
            ..Default::default()
        }),
        security_context: Some(security_context(capabilities(role))),
        volume_mounts: Some(volume_mounts(role)),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    }
}

fn volume_mounts(role: Role) -> Vec<VolumeMount> {
    let mut mounts = vec![
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        },
        // The node's folder of this node's name: a daemon's records (VIPs it added, sync
        // daemons it started, the sysctl values it found) are about this node alone, and must
        // stay so where nodes share a filesystem (the pod lab's nodes share the VM's /run): a
        // teardown deletes its records, and must not delete another node's.
        VolumeMount {
            name: "state".into(),
            mount_path: STATE_DIR.into(),
            sub_path_expr: Some(STATE_SUBPATH.into()),
            ..Default::default()
        },
    ];
    if role == Role::Balancer {
        // Writable: a bind of the node's procfs directory, where NET_ADMIN over the node's
        // network namespace (hostNetwork) is what the kernel asks for a write.
        mounts.push(VolumeMount {
            name: IPVS_SYSCTL_VOLUME.into(),
            mount_path: IPVS_SYSCTL_MOUNT.into(),
            ..Default::default()
        });
    }
    mounts
}

fn volumes(role: Role) -> Vec<Volume> {
    let mut volumes = vec![
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: Some(quantity("16Mi")),
            }),
            ..Default::default()
        },
        // What the daemon changed in the kernel outlives the pod (an update
        // replaces the pod, the VIPs and IPVS services stay), so the record of
        // it must too; the host's /run is cleared on reboot, like the kernel.
        Volume {
            name: "state".into(),
            host_path: Some(HostPathVolumeSource {
                path: STATE_DIR.into(),
                type_: Some("DirectoryOrCreate".into()),
            }),
            ..Default::default()
        },
    ];
    if role == Role::Balancer {
        volumes.push(Volume {
            name: IPVS_SYSCTL_VOLUME.into(),
            host_path: Some(HostPathVolumeSource {
                path: IPVS_SYSCTL_HOST_DIR.into(),
                // No type on purpose: the kubelet checks a type (`Directory`) when it sets up
                // the pod's volumes, before any init container runs, so on a node where
                // ip_vs is not loaded yet the pod would wait for a directory only its own init
                // container creates. Untyped, the source is resolved when the balancer
                // container is created, after `prepare` loaded ip_vs (ADR 0005).
                type_: None,
            }),
            ..Default::default()
        });
    }
    volumes
}

/// Seconds between the kubelet's probes of the balancer's `/readyz`.
const BALANCER_READINESS_PERIOD: i32 = 1;

/// `minReadySeconds` of the balancer DaemonSet: how long a new balancer pod stays Ready before
/// the rolling update stops the next node's. Once ready, the new pod's routers take their
/// configured priority on the same tick, and the one that outranks the current Master preempts
/// it after a Master_Down_Interval: (missedAdvertisements + 1) x interval, 3.6 s at the default
/// 1 s adverts (0.34 s at the lab's 100 ms); the kubelet sees readiness up to one probe period
/// (1 s) late. 5 s covers both, so the next node to restart is a Backup by then and its stop
/// moves no VIP: a preempt and a priority-0 handover never overlap, and the VIP moves once
/// per Master restarted. (Slower adverts only make the overlap possible, never a lost flow:
/// either way the VIP goes to a ready node.)
const BALANCER_MIN_READY_SECONDS: i32 = 5;

fn daemonset(cfg: &NodeDaemonConfig, role: Role) -> Result<DaemonSet, Error> {
    let labels = labels(cfg, role);
    let rc = cfg.role(role);
    let mut ds = DaemonSet {
        metadata: ObjectMeta {
            name: Some(cfg.role(role).daemonset_name.clone()),
            namespace: Some(cfg.namespace.clone()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(selector_labels(cfg, role)),
                match_expressions: None,
            },
            // One node at a time: a balancer restart costs a VRRP failover, so never several at
            // once; and the next only once this one is Ready (see `BALANCER_MIN_READY_SECONDS`).
            min_ready_seconds: (role == Role::Balancer).then_some(BALANCER_MIN_READY_SECONDS),
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::Int(1)),
                    max_surge: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(rc.service_account.clone()),
                    automount_service_account_token: Some(true),
                    host_network: Some(true),
                    dns_policy: Some("ClusterFirstWithHostNet".into()),
                    // Long enough for a balancer to hand its VIPs over (VRRP priority 0) and,
                    // when the daemon leaves the node for good, to tear down (ADR 0008).
                    termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
                    node_selector: (!rc.node_selector.is_empty()).then(|| rc.node_selector.clone()),
                    tolerations: (!rc.tolerations.is_empty()).then(|| rc.tolerations.clone()),
                    security_context: Some(PodSecurityContext {
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..Default::default()
                    }),
                    init_containers: (role == Role::Balancer).then(|| vec![prepare_container(cfg)]),
                    containers: vec![container(cfg, role)],
                    volumes: Some(volumes(role)),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    };
    let hash = config_hash(&ds)?;
    ds.metadata.annotations = Some(BTreeMap::from([(HASH_ANNOTATION.to_string(), hash)]));
    Ok(ds)
}

/// FNV-1a (64 bit) of the object's JSON: stable across Rust releases and platforms, unlike
/// `std`'s hasher, so an operator upgrade does not re-apply unchanged DaemonSets needlessly.
pub fn config_hash(ds: &DaemonSet) -> Result<String, Error> {
    let json = serde_json::to_vec(ds).map_err(|source| Error::Serialize {
        what: "a DaemonSet".into(),
        source,
    })?;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in json {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    Ok(format!("{h:016x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> NodeDaemonConfig {
        NodeDaemonConfig {
            namespace: "lvstun-system".into(),
            instance: "lvstun-operator".into(),
            image: "localhost/lvstun/lvstun-node:0.1.0".into(),
            image_pull_policy: "IfNotPresent".into(),
            log_format: "json".into(),
            balancer: RoleConfig {
                daemonset_name: "lvstun-balancer".into(),
                service_account: "lvstun-balancer".into(),
                health_port: 9781,
                node_selector: BTreeMap::from([("lvstun.io/balancer".into(), "true".into())]),
                tolerations: Vec::new(),
            },
            web: RoleConfig {
                daemonset_name: "lvstun-web".into(),
                service_account: "lvstun-web".into(),
                health_port: 9782,
                node_selector: BTreeMap::from([("lvstun.io/web".into(), "true".into())]),
                tolerations: Vec::new(),
            },
            web_vip_device: None,
        }
    }

    fn build() -> BTreeMap<Role, DaemonSet> {
        daemonsets(&cfg()).unwrap()
    }

    fn pod(ds: &DaemonSet) -> &PodSpec {
        ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn both_daemonsets_exist_on_the_nodes_the_chart_names_without_affinity() {
        let out = build();
        assert_eq!(out.keys().copied().collect::<Vec<_>>(), Role::ALL.to_vec());
        for (role, label) in [
            (Role::Balancer, "lvstun.io/balancer"),
            (Role::Web, "lvstun.io/web"),
        ] {
            let p = pod(&out[&role]);
            assert_eq!(
                p.node_selector,
                Some(labels(&[(label, "true")])),
                "{role:?} runs where the admin's label is"
            );
            assert_eq!(p.affinity, None, "{role:?}: nothing derived from the CRs");
            assert_eq!(
                p.tolerations, None,
                "{role:?}: no toleration unless the chart gives one"
            );
        }
    }

    #[test]
    fn the_charts_vip_device_reaches_only_the_web_daemons_arguments() {
        let mut c = cfg();
        c.web_vip_device = Some("tunl0".into());
        let out = daemonsets(&c).unwrap();
        let args = |role: Role| pod(&out[&role]).containers[0].args.clone().unwrap();
        assert_eq!(
            args(Role::Web).last().map(String::as_str),
            Some("--vip-device=tunl0")
        );
        assert!(
            !args(Role::Balancer)
                .iter()
                .any(|a| a.starts_with("--vip-device")),
            "the balancer has no VIP device"
        );
        // Not given: no argument added (so the pod template's hash stays as it was).
        assert!(
            !node_args(&cfg(), Role::Web)
                .iter()
                .any(|a| a.starts_with("--vip-device"))
        );
    }

    #[test]
    fn the_charts_tolerations_and_an_empty_selector_reach_the_pods() {
        let mut c = cfg();
        let dedicated = Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("lb".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        };
        c.balancer.tolerations = vec![dedicated.clone()];
        c.web.node_selector.clear();
        let out = daemonsets(&c).unwrap();
        assert_eq!(
            pod(&out[&Role::Balancer]).tolerations,
            Some(vec![dedicated])
        );
        assert_eq!(pod(&out[&Role::Web]).tolerations, None);
        assert_eq!(
            pod(&out[&Role::Web]).node_selector,
            None,
            "an empty selector: every node"
        );
    }

    #[test]
    fn a_node_runs_a_daemon_when_it_carries_every_label_of_the_selector() {
        let sel = labels(&[("lvstun.io/balancer", "true"), ("zone", "a")]);
        assert!(runs_daemon(
            &sel,
            &labels(&[("lvstun.io/balancer", "true"), ("zone", "a"), ("x", "y")])
        ));
        assert!(!runs_daemon(
            &sel,
            &labels(&[("lvstun.io/balancer", "true")])
        ));
        assert!(!runs_daemon(
            &sel,
            &labels(&[("lvstun.io/balancer", "false"), ("zone", "a")])
        ));
        assert!(
            runs_daemon(&BTreeMap::new(), &BTreeMap::new()),
            "an empty selector matches every node"
        );
        assert_eq!(label_arguments(&sel), "lvstun.io/balancer=true zone=a");
    }

    #[test]
    fn pods_are_least_privilege_host_network_with_probes_and_args() {
        let out = build();
        for (role, port) in [(Role::Balancer, 9781), (Role::Web, 9782)] {
            let ds = &out[&role];
            assert_eq!(ds.metadata.namespace.as_deref(), Some("lvstun-system"));
            let labels = ds.metadata.labels.as_ref().unwrap();
            assert_eq!(labels["app.kubernetes.io/managed-by"], "lvstun-operator");
            assert_eq!(labels[OPERATOR_LABEL], "lvstun-operator");
            assert!(ds.metadata.owner_references.is_none());
            let p = pod(ds);
            assert_eq!(p.host_network, Some(true));
            assert_eq!(
                p.service_account_name.as_deref(),
                Some(cfg().role(role).service_account.as_str())
            );
            let c = &p.containers[0];
            let mut want = vec![
                role.as_str().to_string(),
                "--node-name=$(NODE_NAME)".to_string(),
                format!("--health-port={port}"),
                "--health-address=127.0.0.1".to_string(),
                "--health-address=$(NODE_IP)".to_string(),
                "--log-format=json".to_string(),
            ];
            if role == Role::Balancer {
                want.push("--ipvs-sysctl-dir=/host/proc/sys/net/ipv4/vs".to_string());
            }
            want.push(format!(
                "--daemonset={}",
                ds.metadata.name.as_ref().unwrap()
            ));
            assert_eq!(c.args.as_ref().unwrap(), &want);
            assert_eq!(p.termination_grace_period_seconds, Some(30));
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(sc.privileged, Some(false));
            assert_eq!(sc.read_only_root_filesystem, Some(true));
            assert_eq!(sc.allow_privilege_escalation, Some(false));
            let caps = sc.capabilities.as_ref().unwrap();
            let mut want_caps = vec!["NET_ADMIN".to_string(), "NET_RAW".to_string()];
            if role == Role::Balancer {
                want_caps.push("SYS_NICE".to_string());
            }
            assert_eq!(caps.add, Some(want_caps));
            assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));
            let env = c.env.as_ref().unwrap();
            // The daemon looks its DaemonSet up in its own namespace at SIGTERM (ADR 0008).
            assert_eq!(env[1].name, "POD_NAMESPACE");
            assert_eq!(
                env[1]
                    .value_from
                    .as_ref()
                    .unwrap()
                    .field_ref
                    .as_ref()
                    .unwrap()
                    .field_path,
                "metadata.namespace"
            );
            assert_eq!(env[0].name, "NODE_NAME");
            assert_eq!(
                env[0]
                    .value_from
                    .as_ref()
                    .unwrap()
                    .field_ref
                    .as_ref()
                    .unwrap()
                    .field_path,
                "spec.nodeName"
            );
            let live = c
                .liveness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap();
            assert_eq!(
                (live.host.as_deref(), live.path.as_deref(), &live.port),
                (Some("127.0.0.1"), Some("/healthz"), &IntOrString::Int(port))
            );
            let state = p
                .volumes
                .as_ref()
                .unwrap()
                .iter()
                .find(|v| v.name == "state")
                .unwrap();
            // The state files (owned VIPs, web-state.json) outlive the pod on the host's /run,
            // in a folder of the node's name.
            let host_path = state.host_path.as_ref().unwrap();
            assert_eq!(host_path.path, "/run/lvstun");
            assert_eq!(host_path.type_.as_deref(), Some("DirectoryOrCreate"));
            assert!(
                c.volume_mounts
                    .as_ref()
                    .unwrap()
                    .iter()
                    .any(|m| m.name == "state"
                        && m.mount_path == "/run/lvstun"
                        && m.sub_path_expr.as_deref() == Some("$(NODE_NAME)")
                        && m.read_only != Some(true))
            );
            // The subpath's variable is the container's.
            assert!(
                c.env
                    .as_ref()
                    .unwrap()
                    .iter()
                    .any(|e| e.name == "NODE_NAME")
            );
            let ready = c
                .readiness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap();
            assert_eq!(ready.path.as_deref(), Some("/readyz"));
            let res = c.resources.as_ref().unwrap();
            assert!(res.requests.as_ref().unwrap().contains_key("memory"));
            assert!(res.limits.as_ref().unwrap().contains_key("memory"));
        }
    }

    /// A rolling update (an image upgrade) goes one balancer at a time, each new pod Ready
    /// (its /readyz: could take the VIP) and given time for its preempt before the next stops.
    #[test]
    fn balancers_roll_one_ready_node_at_a_time_and_outlive_their_handover() {
        let out = build();
        let ds = out[&Role::Balancer].spec.as_ref().unwrap();
        let rolling = ds
            .update_strategy
            .as_ref()
            .unwrap()
            .rolling_update
            .as_ref()
            .unwrap();
        assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(1)));
        let ready = pod(&out[&Role::Balancer]).containers[0]
            .readiness_probe
            .as_ref()
            .unwrap();
        assert_eq!(ready.period_seconds, Some(1));
        // Readiness seen up to one period late, then a preempt after Master_Down_Interval at the
        // default 1 s adverts and 3 missed ones (at most (3 + 1) x 1 s): both fit.
        let min_ready = ds.min_ready_seconds.unwrap();
        assert!(
            min_ready >= ready.period_seconds.unwrap() + (3 + 1),
            "{min_ready}"
        );
        // The web pods gate nothing of the kind.
        assert_eq!(
            out[&Role::Web].spec.as_ref().unwrap().min_ready_seconds,
            None
        );
        // SIGTERM waits at most 5 s for the handover (SHUTDOWN_LIMIT in the balancer): the
        // grace period leaves room after it.
        for role in Role::ALL {
            let grace = pod(&out[&role]).termination_grace_period_seconds.unwrap();
            assert!(grace > 5, "{role:?}: {grace}");
        }
    }

    #[test]
    fn the_balancer_writes_the_nodes_ipvs_sysctls_through_a_mount_outside_proc() {
        let out = build();
        let p = pod(&out[&Role::Balancer]);

        // The volume: the node's /proc/sys/net/ipv4/vs, untyped so the kubelet does not check
        // it before the init container has loaded ip_vs.
        let volume = p
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == IPVS_SYSCTL_VOLUME)
            .unwrap();
        let host_path = volume.host_path.as_ref().unwrap();
        assert_eq!(host_path.path, "/proc/sys/net/ipv4/vs");
        assert_eq!(
            host_path.type_, None,
            "a type is checked before init containers run"
        );

        // The mount: writable, outside /proc (runc refuses mounts inside /proc), and the same
        // path the daemon is told with --ipvs-sysctl-dir.
        let c = &p.containers[0];
        let mount = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == IPVS_SYSCTL_VOLUME)
            .unwrap();
        assert_eq!(mount.mount_path, "/host/proc/sys/net/ipv4/vs");
        assert!(!mount.mount_path.starts_with("/proc/"));
        assert_ne!(mount.read_only, Some(true));
        assert!(
            c.args
                .as_ref()
                .unwrap()
                .contains(&format!("--ipvs-sysctl-dir={}", mount.mount_path))
        );

        // The init container: `balancer prepare`, same image, nothing privileged, no capability.
        let init = p.init_containers.as_ref().unwrap();
        assert_eq!(init.len(), 1);
        let prep = &init[0];
        assert_eq!(prep.name, "prepare");
        assert_eq!(prep.image, c.image);
        assert_eq!(
            prep.args.as_ref().unwrap(),
            &vec!["balancer".to_string(), "prepare".to_string()]
        );
        assert!(prep.volume_mounts.is_none(), "it mounts nothing");
        let sc = prep.security_context.as_ref().unwrap();
        assert_eq!(sc.privileged, Some(false));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        let caps = sc.capabilities.as_ref().unwrap();
        assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));
        assert_eq!(
            caps.add, None,
            "resolving a genetlink family needs no capability"
        );

        // Nothing in either pod is privileged, and only the balancer mounts the sysctls.
        for role in Role::ALL {
            let p = pod(&out[&role]);
            for c in p
                .containers
                .iter()
                .chain(p.init_containers.iter().flatten())
            {
                let sc = c.security_context.as_ref().unwrap();
                assert_eq!(sc.privileged, Some(false), "{role:?} {}", c.name);
                assert_eq!(sc.allow_privilege_escalation, Some(false));
            }
            assert_eq!(p.host_pid, None);
            assert_eq!(p.host_ipc, None);
        }
        let web = pod(&out[&Role::Web]);
        assert!(web.init_containers.is_none());
        assert!(
            web.volumes
                .as_ref()
                .unwrap()
                .iter()
                .all(|v| v.name != IPVS_SYSCTL_VOLUME)
        );
        assert!(
            !web.containers[0]
                .args
                .as_ref()
                .unwrap()
                .iter()
                .any(|a| a.starts_with("--ipvs-sysctl-dir"))
        );
    }

    #[test]
    fn same_configuration_same_bytes_and_hash_tracks_content() {
        let a = build();
        let b = build();
        let ds_a = &a[&Role::Balancer];
        assert_eq!(
            serde_json::to_string(ds_a).unwrap(),
            serde_json::to_string(&b[&Role::Balancer]).unwrap()
        );
        let mut other = cfg();
        other
            .balancer
            .node_selector
            .insert("zone".into(), "x".into());
        let c = daemonsets(&other).unwrap();
        let h = |d: &DaemonSet| d.metadata.annotations.as_ref().unwrap()[HASH_ANNOTATION].clone();
        assert_ne!(h(ds_a), h(&c[&Role::Balancer]));
        assert_eq!(
            h(&a[&Role::Web]),
            h(&c[&Role::Web]),
            "the web DaemonSet does not depend on the balancer's selector"
        );
        assert_eq!(h(ds_a).len(), 16);
    }
}
