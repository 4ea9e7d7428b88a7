//! The two node DaemonSets as data: the balancer DaemonSet runs `lvstun-node balancer` on exactly
//! the nodes that some VirtualService's `spec.balancers.nodeSelector` selects; the web DaemonSet
//! runs `lvstun-node web` on exactly the nodes that some RealServer names in `spec.nodeName`.
//!
//! Pure: the same CRs give byte-identical objects (sorted terms, sorted names), so re-applying
//! them is a no-op for the API server and `metadata.generation` only moves when something real
//! changed. The objects carry a hash of themselves so the applier can skip unchanged ones
//! without a request.
//!
//! The pods get what the daemons need and nothing more: host networking (they program the
//! node's own network stack), `NET_ADMIN` and `NET_RAW` (IPVS and addresses over netlink, VRRP and
//! gratuitous ARP over raw sockets) with every other capability dropped, not privileged, a
//! read-only root filesystem, and a toleration for every taint, as node agents such as kube-proxy
//! have, because the set of nodes is decided by node affinity alone.
//!
//! The balancer pod also gets the node's `/proc/sys/net/ipv4/vs` mounted outside `/proc` (the
//! runtime keeps the container's `/proc/sys` read-only and refuses mounts inside `/proc`), and
//! an init container, `balancer prepare` with no capability at all, that loads `ip_vs` so that
//! directory exists when the balancer container starts (ADR 0005).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, HostPathVolumeSource, NodeAffinity, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use lvstun_crds::v1alpha1::{RealServer, VirtualService};

use crate::error::Error;
use crate::validate::{self, ObjectKey, Verdict};

/// Annotation holding [`config_hash`] of the applied object.
pub const HASH_ANNOTATION: &str = "lvstun.io/config-hash";
/// Where the daemons record what they changed on the host (`lvstun-node --state-dir` default),
/// mounted from the host.
pub const STATE_DIR: &str = "/run/lvstun";
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleConfig {
    /// DaemonSet name (by default the role's ServiceAccount name, `<fullname>-balancer` /
    /// `<fullname>-web`, as the chart names everything after its fullname).
    pub daemonset_name: String,
    /// ServiceAccount of the pods (the chart binds the role's ClusterRole to it).
    pub service_account: String,
    /// Port of the daemon's `/healthz` and `/readyz` (on the host network).
    pub health_port: i32,
}

/// Everything about the node DaemonSets that comes from the operator's command line.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Where each role must run, derived from the CRs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placement {
    /// Canonical node selector terms of the balancer nodes (one per distinct selector; a
    /// selector that selects every node is kept as an empty term list). Empty: no balancer.
    pub balancer_terms: BTreeSet<Vec<Requirement>>,
    /// Nodes named by RealServers. Empty: no web DaemonSet.
    pub web_nodes: BTreeSet<String>,
}

/// One node selector requirement in canonical, comparable form: key, operator, sorted values.
pub type Requirement = (String, String, Vec<String>);

/// Canonical form of a label selector as node selector requirements (`matchLabels` become `In`
/// with one value), sorted and without duplicates, so equal selectors give equal terms.
pub fn requirements(sel: &LabelSelector) -> Vec<Requirement> {
    let mut reqs: BTreeSet<Requirement> = BTreeSet::new();
    for (k, v) in sel.match_labels.iter().flatten() {
        reqs.insert((k.clone(), "In".into(), vec![v.clone()]));
    }
    for e in sel.match_expressions.iter().flatten() {
        let mut values = e.values.clone().unwrap_or_default();
        values.sort();
        values.dedup();
        reqs.insert((e.key.clone(), e.operator.clone(), values));
    }
    reqs.into_iter().collect()
}

/// Where the daemons must run: the balancer nodes of every VirtualService that owns its claims
/// (a conflicting or invalid one is programmed nowhere, so it places no pod either), and every
/// node a RealServer names (a name that cannot be a node is skipped: it would make the API
/// refuse the whole DaemonSet).
pub fn placement<'a>(
    virtual_services: impl IntoIterator<Item = &'a VirtualService>,
    verdicts: &BTreeMap<ObjectKey, Verdict>,
    real_servers: impl IntoIterator<Item = &'a RealServer>,
) -> Placement {
    let balancer_terms = virtual_services
        .into_iter()
        .filter(|vs| verdicts.get(&ObjectKey::of(*vs)) == Some(&Verdict::Owner))
        .map(|vs| requirements(&vs.spec.balancers.node_selector))
        .collect();
    let web_nodes = real_servers
        .into_iter()
        .filter(|rs| rs.metadata.deletion_timestamp.is_none())
        .filter_map(|rs| rs.spec.node_name.clone())
        .filter(|n| validate::is_dns_subdomain(n))
        .collect();
    Placement {
        balancer_terms,
        web_nodes,
    }
}

/// The desired DaemonSet of each role; `None` means no CR needs it and it must not exist.
pub fn daemonsets(
    cfg: &NodeDaemonConfig,
    placement: &Placement,
) -> Result<BTreeMap<Role, Option<DaemonSet>>, Error> {
    let mut out = BTreeMap::new();
    let balancer = match balancer_affinity(&placement.balancer_terms) {
        None => None,
        Some(terms) => Some(daemonset(cfg, Role::Balancer, terms)?),
    };
    out.insert(Role::Balancer, balancer);
    let web = match web_affinity(&placement.web_nodes) {
        None => None,
        Some(terms) => Some(daemonset(cfg, Role::Web, Some(terms))?),
    };
    out.insert(Role::Web, web);
    Ok(out)
}

/// Required node affinity of the balancer pods: one term per distinct selector (the API ORs
/// terms and ANDs the requirements inside one). `None`: no balancer needed at all;
/// `Some(None)`: some selector selects every node, so there is no affinity.
fn balancer_affinity(terms: &BTreeSet<Vec<Requirement>>) -> Option<Option<Vec<NodeSelectorTerm>>> {
    if terms.is_empty() {
        return None;
    }
    if terms.iter().any(Vec::is_empty) {
        // An empty node selector term matches nothing, while an empty label selector matches
        // everything: the only faithful rendering is no affinity.
        return Some(None);
    }
    Some(Some(
        terms
            .iter()
            .map(|reqs| NodeSelectorTerm {
                match_expressions: Some(
                    reqs.iter()
                        .map(|(key, operator, values)| NodeSelectorRequirement {
                            key: key.clone(),
                            operator: operator.clone(),
                            values: (!values.is_empty()).then(|| values.clone()),
                        })
                        .collect(),
                ),
                match_fields: None,
            })
            .collect(),
    ))
}

/// Required node affinity of the web pods: one `matchFields metadata.name In [node]` term per
/// node, because the API allows exactly one value in a field requirement.
fn web_affinity(nodes: &BTreeSet<String>) -> Option<Vec<NodeSelectorTerm>> {
    if nodes.is_empty() {
        return None;
    }
    Some(
        nodes
            .iter()
            .map(|n| NodeSelectorTerm {
                match_expressions: None,
                match_fields: Some(vec![NodeSelectorRequirement {
                    key: "metadata.name".into(),
                    operator: "In".into(),
                    values: Some(vec![n.clone()]),
                }]),
            })
            .collect(),
    )
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
        format!("--log-format={}", cfg.log_format),
    ];
    if role == Role::Balancer {
        args.push(format!("--ipvs-sysctl-dir={IPVS_SYSCTL_MOUNT}"));
    }
    args
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
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("health".into()),
            container_port: port,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        liveness_probe: Some(probe("/healthz", port, 10)),
        readiness_probe: Some(probe("/readyz", port, 5)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), quantity(cpu)),
                ("memory".into(), quantity(memory)),
            ])),
            limits: Some(BTreeMap::from([("memory".into(), quantity(memory_limit))])),
            ..Default::default()
        }),
        security_context: Some(security_context(&["NET_ADMIN", "NET_RAW"])),
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
        VolumeMount {
            name: "state".into(),
            mount_path: STATE_DIR.into(),
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

fn daemonset(
    cfg: &NodeDaemonConfig,
    role: Role,
    terms: Option<Vec<NodeSelectorTerm>>,
) -> Result<DaemonSet, Error> {
    let labels = labels(cfg, role);
    let affinity = terms.map(|node_selector_terms| Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms,
            }),
            preferred_during_scheduling_ignored_during_execution: None,
        }),
        ..Default::default()
    });
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
            // One node at a time: a balancer restart costs a VRRP failover, so never several at once.
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
                    service_account_name: Some(cfg.role(role).service_account.clone()),
                    automount_service_account_token: Some(true),
                    host_network: Some(true),
                    dns_policy: Some("ClusterFirstWithHostNet".into()),
                    // Long enough for a balancer to send its VRRP priority-0 advertisement and
                    // let the backup take over before the process goes.
                    termination_grace_period_seconds: Some(10),
                    tolerations: Some(vec![Toleration {
                        operator: Some("Exists".into()),
                        ..Default::default()
                    }]),
                    affinity,
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
    use crate::fixtures::{match_labels, rs, vs, www};
    use crate::validate::resolve;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use lvstun_crds::v1alpha1::Protocol;

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
            },
            web: RoleConfig {
                daemonset_name: "lvstun-web".into(),
                service_account: "lvstun-web".into(),
                health_port: 9782,
            },
        }
    }

    fn build(vss: &[VirtualService], rss: &[RealServer]) -> BTreeMap<Role, Option<DaemonSet>> {
        let verdicts = resolve(vss);
        daemonsets(&cfg(), &placement(vss, &verdicts, rss)).unwrap()
    }

    fn terms(ds: &DaemonSet) -> Vec<NodeSelectorTerm> {
        ds.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .affinity
            .as_ref()
            .unwrap()
            .node_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()
            .node_selector_terms
            .clone()
    }

    fn pod(ds: &DaemonSet) -> &PodSpec {
        ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    #[test]
    fn nothing_needed_means_no_daemonsets() {
        let out = build(&[], &[rs("web1", "198.51.100.10")]);
        assert_eq!(out[&Role::Balancer], None);
        assert_eq!(
            out[&Role::Web],
            None,
            "a RealServer without nodeName needs no web pod"
        );
    }

    #[test]
    fn balancer_terms_one_per_distinct_selector_ored() {
        let a = www();
        let mut b = vs("other", "b", 200, "192.0.2.7", &[(80, Protocol::Tcp)]);
        b.spec.balancers.node_selector = match_labels(&[("lvstun.io/balancer", "true")]); // same as a
        let mut c = vs("other", "c", 300, "192.0.2.8", &[(80, Protocol::Tcp)]);
        c.spec.balancers.node_selector = LabelSelector {
            match_labels: Some([("zone".to_string(), "b".to_string())].into()),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "role".into(),
                operator: "NotIn".into(),
                values: Some(vec!["x".into(), "a".into()]),
            }]),
        };
        let out = build(&[a, b, c], &[]);
        let ds = out[&Role::Balancer].as_ref().unwrap();
        let t = terms(ds);
        assert_eq!(t.len(), 2, "{t:#?}");
        let first = t[0].match_expressions.as_ref().unwrap();
        assert_eq!(first[0].key, "lvstun.io/balancer");
        assert_eq!(first[0].operator, "In");
        assert_eq!(first[0].values, Some(vec!["true".to_string()]));
        let second = t[1].match_expressions.as_ref().unwrap();
        assert_eq!(second.len(), 2);
        assert_eq!(
            (second[0].key.as_str(), second[0].operator.as_str()),
            ("role", "NotIn")
        );
        assert_eq!(
            second[0].values,
            Some(vec!["a".to_string(), "x".to_string()]),
            "values sorted"
        );
        assert_eq!(
            (second[1].key.as_str(), second[1].operator.as_str()),
            ("zone", "In")
        );
        assert_eq!(out[&Role::Web], None);
    }

    #[test]
    fn a_conflicting_virtual_service_places_no_balancer() {
        let a = www();
        let mut loser = vs("ns", "late", 200, "192.0.2.100", &[(80, Protocol::Tcp)]);
        loser.spec.balancers.node_selector = match_labels(&[("only-loser", "true")]);
        let out = build(&[a, loser], &[]);
        let t = terms(out[&Role::Balancer].as_ref().unwrap());
        assert_eq!(t.len(), 1);
        assert_eq!(
            t[0].match_expressions.as_ref().unwrap()[0].key,
            "lvstun.io/balancer"
        );
    }

    #[test]
    fn empty_node_selector_means_every_node_so_no_affinity() {
        let mut a = www();
        a.spec.balancers.node_selector = LabelSelector::default();
        let out = build(
            &[a, vs("x", "y", 5, "192.0.2.5", &[(80, Protocol::Tcp)])],
            &[],
        );
        let ds = out[&Role::Balancer].as_ref().unwrap();
        assert_eq!(pod(ds).affinity, None);
    }

    #[test]
    fn web_runs_on_named_nodes_one_match_fields_term_each() {
        let mut a = rs("web1", "198.51.100.10");
        a.spec.node_name = Some("node-b".into());
        let mut b = rs("web2", "198.51.100.11");
        b.spec.node_name = Some("node-a".into());
        let mut c = rs("web3", "198.51.100.12");
        c.spec.node_name = Some("node-a".into());
        let mut bad = rs("web4", "198.51.100.13");
        bad.spec.node_name = Some("Not A Node".into());
        let out = build(&[], &[a, b, c, bad]);
        let ds = out[&Role::Web].as_ref().unwrap();
        let t = terms(ds);
        let names: Vec<_> = t
            .iter()
            .map(|t| {
                let f = &t.match_fields.as_ref().unwrap()[0];
                assert_eq!(
                    (f.key.as_str(), f.operator.as_str()),
                    ("metadata.name", "In")
                );
                f.values.as_ref().unwrap().clone()
            })
            .collect();
        assert_eq!(
            names,
            vec![vec!["node-a".to_string()], vec!["node-b".to_string()]]
        );
    }

    #[test]
    fn pods_are_least_privilege_host_network_with_probes_and_args() {
        let mut r = rs("web1", "198.51.100.10");
        r.spec.node_name = Some("n1".into());
        let out = build(&[www()], &[r]);
        for (role, port) in [(Role::Balancer, 9781), (Role::Web, 9782)] {
            let ds = out[&role].as_ref().unwrap();
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
            assert_eq!(
                p.tolerations.as_ref().unwrap()[0].operator.as_deref(),
                Some("Exists")
            );
            let c = &p.containers[0];
            let mut want = vec![
                role.as_str().to_string(),
                "--node-name=$(NODE_NAME)".to_string(),
                format!("--health-port={port}"),
                "--log-format=json".to_string(),
            ];
            if role == Role::Balancer {
                want.push("--ipvs-sysctl-dir=/host/proc/sys/net/ipv4/vs".to_string());
            }
            assert_eq!(c.args.as_ref().unwrap(), &want);
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(sc.privileged, Some(false));
            assert_eq!(sc.read_only_root_filesystem, Some(true));
            assert_eq!(sc.allow_privilege_escalation, Some(false));
            let caps = sc.capabilities.as_ref().unwrap();
            assert_eq!(
                caps.add,
                Some(vec!["NET_ADMIN".to_string(), "NET_RAW".to_string()])
            );
            assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));
            let env = c.env.as_ref().unwrap();
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
            // The state files (owned VIPs, web-state.json) outlive the pod on the host's /run.
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
                        && m.read_only != Some(true))
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

    #[test]
    fn the_balancer_writes_the_nodes_ipvs_sysctls_through_a_mount_outside_proc() {
        let mut r = rs("web1", "198.51.100.10");
        r.spec.node_name = Some("n1".into());
        let out = build(&[www()], &[r]);
        let p = pod(out[&Role::Balancer].as_ref().unwrap());

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
            let p = pod(out[&role].as_ref().unwrap());
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
        let web = pod(out[&Role::Web].as_ref().unwrap());
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
    fn same_input_same_bytes_and_hash_tracks_content() {
        let a = build(&[www()], &[]);
        let b = build(&[www()], &[]);
        let ds_a = a[&Role::Balancer].as_ref().unwrap();
        assert_eq!(
            serde_json::to_string(ds_a).unwrap(),
            serde_json::to_string(b[&Role::Balancer].as_ref().unwrap()).unwrap()
        );
        let mut other = www();
        other.spec.balancers.node_selector = match_labels(&[("zone", "x")]);
        let c = build(&[other], &[]);
        let h = |d: &DaemonSet| d.metadata.annotations.as_ref().unwrap()[HASH_ANNOTATION].clone();
        assert_ne!(h(ds_a), h(c[&Role::Balancer].as_ref().unwrap()));
        assert_eq!(h(ds_a).len(), 16);
    }
}
