//! Command line and environment of `lvstun-operator`, as the chart's Deployment passes them.
//!
//! No I/O: parsing and turning the flags into the typed configuration the other modules take.

use std::collections::BTreeMap;

use clap::{Parser, ValueEnum};
use k8s_openapi::api::core::v1::Toleration;

use crate::build::{NodeDaemonConfig, RoleConfig};
use crate::error::Error;
use crate::leader::LeaseConfig;
use crate::validate::{check_label_key, check_label_value};

/// The balancer pods' node selector when none is given: the label the README tells admins to
/// put on the nodes that may hold a VIP.
pub const DEFAULT_BALANCER_NODE_SELECTOR: &str = r#"{"lvstun.io/balancer":"true"}"#;
/// The web pods' node selector when none is given: the label the README tells admins to put on
/// the nodes that are real servers.
pub const DEFAULT_WEB_NODE_SELECTOR: &str = r#"{"lvstun.io/web":"true"}"#;

/// A DaemonSet's node selector as the chart passes it: a JSON object of label key to value
/// (`toJson` of the chart value), parsed and checked once here so that a typo is refused at
/// start with the flag named rather than by the API server at every apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSelectorArg(pub BTreeMap<String, String>);

fn parse_node_selector(s: &str) -> Result<NodeSelectorArg, String> {
    let map: BTreeMap<String, String> = serde_json::from_str(s)
        .map_err(|e| format!("not a JSON object of label key to value: {e}"))?;
    for (k, v) in &map {
        check_label_key(k).map_err(|why| format!("label key {k:?} {why}"))?;
        check_label_value(v).map_err(|why| format!("label value {v:?} of {k:?} {why}"))?;
    }
    Ok(NodeSelectorArg(map))
}

/// The web role's VIP device as the chart passes it (`web.vipDevice`): `tunl0`, or the name of
/// the dummy device the web daemon creates for the VIPs. Checked as the daemon checks its
/// `--vip-device` (1 to 15 characters, no '/' or space), so a typo stops the operator at start
/// instead of crash-looping every web pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipDeviceArg(pub String);

/// The longest Linux interface name (`IFNAMSIZ` - 1).
const IFNAME_MAX: usize = 15;

fn parse_vip_device(s: &str) -> Result<VipDeviceArg, String> {
    if s.is_empty() || s.len() > IFNAME_MAX || s.contains(['/', ' ']) {
        return Err(format!(
            "{s:?} is not an interface name (1 to 15 characters, no '/' or space); use tunl0 or the name of the dummy device for the VIPs"
        ));
    }
    Ok(VipDeviceArg(s.to_owned()))
}

/// A DaemonSet's tolerations as the chart passes them: a JSON list of Kubernetes tolerations.
#[derive(Debug, Clone, PartialEq)]
pub struct TolerationsArg(pub Vec<Toleration>);

fn parse_tolerations(s: &str) -> Result<TolerationsArg, String> {
    let list: Vec<Toleration> =
        serde_json::from_str(s).map_err(|e| format!("not a JSON list of tolerations: {e}"))?;
    for t in &list {
        let op = t.operator.as_deref().unwrap_or("Equal");
        match op {
            "Exists" if t.value.as_deref().is_some_and(|v| !v.is_empty()) => {
                return Err(format!("toleration {t:?}: operator Exists takes no value"));
            }
            "Exists" | "Equal" => {}
            other => {
                return Err(format!(
                    "toleration operator {other:?} is neither Exists nor Equal"
                ));
            }
        }
        if op == "Equal" && t.key.as_deref().unwrap_or_default().is_empty() {
            return Err(format!(
                "toleration {t:?}: an empty key is allowed only with operator Exists"
            ));
        }
        if let Some(e) = t.effect.as_deref()
            && !["", "NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&e)
        {
            return Err(format!(
                "toleration effect {e:?} is none of NoSchedule, PreferNoSchedule, NoExecute"
            ));
        }
    }
    Ok(TolerationsArg(list))
}

/// The `lvstun-node` image of the same version as this operator, under the name `./dev images`
/// writes into its archive and the chart renders by default. Fully qualified with the registry
/// host `localhost` (the convention for locally built images): a short name would be
/// normalized to `docker.io/...`, a public repository this project does not publish to.
pub const DEFAULT_NODE_IMAGE: &str =
    concat!("localhost/lvstun/lvstun-node:", env!("CARGO_PKG_VERSION"));

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

impl LogFormat {
    /// As written on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Json => "json",
            LogFormat::Text => "text",
        }
    }
}

/// Image pull policy of the node DaemonSets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PullPolicy {
    /// Always pull.
    #[value(name = "Always")]
    Always,
    /// Pull when missing.
    #[value(name = "IfNotPresent")]
    IfNotPresent,
    /// Never pull.
    #[value(name = "Never")]
    Never,
}

impl PullPolicy {
    /// As Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// `lvstun-operator`: keeps the balancer and web DaemonSets as its flags say (never as the CRs
/// say, ADR 0007) and folds the node daemons' reports into the VirtualService and RealServer
/// status. A flag given twice takes its
/// last value, so the chart's `extraArgs` can override the built-in ones.
#[derive(Debug, Clone, Parser)]
#[command(name = "lvstun-operator", version, args_override_self = true)]
pub struct Cli {
    /// Image of `lvstun-node` for the DaemonSets. The default is the image `./dev images`
    /// builds and the chart renders by default (tag = this operator's version), so an operator
    /// started without the chart still runs node daemons of its own version.
    #[arg(long, default_value = DEFAULT_NODE_IMAGE)]
    pub node_image: String,
    /// Image pull policy of the DaemonSet pods.
    #[arg(long, value_enum, default_value = "IfNotPresent")]
    pub node_image_pull_policy: PullPolicy,
    /// ServiceAccount of the balancer pods; also the balancer DaemonSet's name unless
    /// --balancer-daemonset-name is given.
    #[arg(long)]
    pub balancer_service_account: String,
    /// ServiceAccount of the web pods; also the web DaemonSet's name unless
    /// --web-daemonset-name is given.
    #[arg(long)]
    pub web_service_account: String,
    /// Name of the balancer DaemonSet (default: the balancer ServiceAccount's name).
    #[arg(long)]
    pub balancer_daemonset_name: Option<String>,
    /// Name of the web DaemonSet (default: the web ServiceAccount's name).
    #[arg(long)]
    pub web_daemonset_name: Option<String>,
    /// Health port of the balancer daemon (on the host network).
    #[arg(long, default_value_t = 9781, value_parser = clap::value_parser!(i32).range(1..=65535))]
    pub balancer_health_port: i32,
    /// Health port of the web daemon (on the host network).
    #[arg(long, default_value_t = 9782, value_parser = clap::value_parser!(i32).range(1..=65535))]
    pub web_health_port: i32,
    /// Node selector of the balancer pods, a JSON object of label key to value (chart value
    /// `balancer.nodeSelector`): the nodes the admin chose to run balancer daemons. `{}`: every
    /// node.
    #[arg(long, default_value = DEFAULT_BALANCER_NODE_SELECTOR, value_parser = parse_node_selector)]
    pub balancer_node_selector: NodeSelectorArg,
    /// Node selector of the web pods, a JSON object of label key to value (chart value
    /// `web.nodeSelector`): the cluster nodes that are real servers. `{}`: every node.
    #[arg(long, default_value = DEFAULT_WEB_NODE_SELECTOR, value_parser = parse_node_selector)]
    pub web_node_selector: NodeSelectorArg,
    /// Tolerations of the balancer pods, a JSON list (chart value `balancer.tolerations`).
    #[arg(long, default_value = "[]", value_parser = parse_tolerations)]
    pub balancer_tolerations: TolerationsArg,
    /// Tolerations of the web pods, a JSON list (chart value `web.tolerations`).
    #[arg(long, default_value = "[]", value_parser = parse_tolerations)]
    pub web_tolerations: TolerationsArg,
    /// Where the web daemons put the VIPs (chart value `web.vipDevice`), passed to them as
    /// `--vip-device`: `tunl0` (the classic layout; needed when a host keeps
    /// `net.ipv4.conf.all.rp_filter` non-zero, see docs/troubleshooting.md) or a dummy device's
    /// name. Not given: the daemon's default (`lvstun0`), and the web DaemonSet's arguments
    /// stay as before, so an upgrade does not restart the web pods.
    #[arg(long, value_parser = parse_vip_device)]
    pub web_vip_device: Option<VipDeviceArg>,
    /// Name of the leader-election Lease in the operator's namespace.
    #[arg(long)]
    pub lease_name: String,
    /// Seconds a lease stays valid without renewal (a standby takes over this long after the
    /// leader dies).
    #[arg(long, default_value_t = 10)]
    pub lease_duration_seconds: u64,
    /// Seconds before expiry at which the leader renews.
    #[arg(long, default_value_t = 3)]
    pub lease_grace_seconds: u64,
    /// Port of /metrics, /healthz and /readyz.
    #[arg(long, default_value_t = 8080, value_parser = clap::value_parser!(u16).range(1..))]
    pub metrics_port: u16,
    /// Log format (also passed to the node daemons).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// The `VIPPolicy` holding the address pools (the chart passes its own, named after the
    /// release). When given, the operator reads it and says in each VirtualService's `InPool`
    /// condition whether it still lies in a pool its namespace may use (ADR 0011); when not,
    /// pools are not its business and no `InPool` is written.
    #[arg(long)]
    pub vip_policy: Option<String>,
    /// Reconciles run at once per loop.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// The operator's namespace: DaemonSets and the Lease live here.
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: String,
    /// This replica's identity in the election.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: String,
}

impl Cli {
    /// Configuration of the node DaemonSets.
    pub fn node_daemons(&self) -> Result<NodeDaemonConfig, Error> {
        let cfg = NodeDaemonConfig {
            namespace: self.namespace.clone(),
            instance: self.lease_name.clone(),
            image: self.node_image.clone(),
            image_pull_policy: self.node_image_pull_policy.as_str().into(),
            log_format: self.log_format.as_str().into(),
            balancer: RoleConfig {
                daemonset_name: self
                    .balancer_daemonset_name
                    .clone()
                    .unwrap_or_else(|| self.balancer_service_account.clone()),
                service_account: self.balancer_service_account.clone(),
                health_port: self.balancer_health_port,
                node_selector: self.balancer_node_selector.0.clone(),
                tolerations: self.balancer_tolerations.0.clone(),
            },
            web: RoleConfig {
                daemonset_name: self
                    .web_daemonset_name
                    .clone()
                    .unwrap_or_else(|| self.web_service_account.clone()),
                service_account: self.web_service_account.clone(),
                health_port: self.web_health_port,
                node_selector: self.web_node_selector.0.clone(),
                tolerations: self.web_tolerations.0.clone(),
            },
            web_vip_device: self.web_vip_device.as_ref().map(|d| d.0.clone()),
        };
        if cfg.balancer.daemonset_name == cfg.web.daemonset_name {
            return Err(Error::Config(format!(
                "the balancer and web DaemonSets would both be named {:?}; give different ServiceAccounts or --*-daemonset-name",
                cfg.web.daemonset_name
            )));
        }
        if cfg.balancer.health_port == cfg.web.health_port {
            return Err(Error::Config(
                "--balancer-health-port and --web-health-port must differ: a node can run both daemons on its host network".into(),
            ));
        }
        for (flag, v) in [
            ("--node-image", &cfg.image),
            ("--namespace/POD_NAMESPACE", &cfg.namespace),
            ("--lease-name", &cfg.instance),
        ] {
            if v.trim().is_empty() {
                return Err(Error::Config(format!("{flag} must not be empty")));
            }
        }
        Ok(cfg)
    }

    /// Configuration of the election.
    pub fn lease(&self) -> LeaseConfig {
        LeaseConfig {
            name: self.lease_name.clone(),
            namespace: self.namespace.clone(),
            identity: self.pod_name.clone(),
            duration_seconds: self.lease_duration_seconds,
            grace_seconds: self.lease_grace_seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Cli, clap::Error> {
        let mut args = vec![
            "lvstun-operator",
            "--node-image=localhost/lvstun/lvstun-node:0.1.0",
            "--node-image-pull-policy=IfNotPresent",
            "--balancer-service-account=lvstun-balancer",
            "--web-service-account=lvstun-web",
            "--lease-name=lvstun-operator",
            "--metrics-port=8080",
            "--log-format=json",
            "--namespace=lvstun-system",
            "--pod-name=op-0",
        ];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args)
    }

    #[test]
    fn the_charts_arguments_parse() {
        let cli = parse(&[]).unwrap();
        let cfg = cli.node_daemons().unwrap();
        assert_eq!(cfg.balancer.daemonset_name, "lvstun-balancer");
        assert_eq!(cfg.web.service_account, "lvstun-web");
        assert_eq!(cfg.log_format, "json");
        assert_eq!(cli.lease().duration_seconds, 10);
    }

    #[test]
    fn the_daemons_run_on_the_labelled_nodes_unless_the_chart_says_otherwise() {
        let cfg = parse(&[]).unwrap().node_daemons().unwrap();
        assert_eq!(
            cfg.balancer.node_selector,
            BTreeMap::from([("lvstun.io/balancer".to_string(), "true".to_string())]),
            "the label the README tells admins to set"
        );
        assert_eq!(
            cfg.web.node_selector,
            BTreeMap::from([("lvstun.io/web".to_string(), "true".to_string())])
        );
        assert!(cfg.balancer.tolerations.is_empty() && cfg.web.tolerations.is_empty());

        let cfg = parse(&[
            r#"--balancer-node-selector={"role":"lb","zone":"a"}"#,
            "--web-node-selector={}",
            r#"--balancer-tolerations=[{"key":"dedicated","operator":"Equal","value":"lb","effect":"NoSchedule"}]"#,
            r#"--web-tolerations=[{"operator":"Exists","effect":"NoExecute","tolerationSeconds":60}]"#,
        ])
        .unwrap()
        .node_daemons()
        .unwrap();
        assert_eq!(cfg.balancer.node_selector.len(), 2);
        assert!(cfg.web.node_selector.is_empty(), "{{}}: every node");
        assert_eq!(
            cfg.balancer.tolerations[0].key.as_deref(),
            Some("dedicated")
        );
        assert_eq!(cfg.web.tolerations[0].operator.as_deref(), Some("Exists"));
        assert_eq!(cfg.web.tolerations[0].toleration_seconds, Some(60));
    }

    #[test]
    fn the_vip_device_is_passed_on_only_when_the_chart_sets_it() {
        let cfg = parse(&[]).unwrap().node_daemons().unwrap();
        assert_eq!(cfg.web_vip_device, None);
        let cfg = parse(&["--web-vip-device=tunl0"])
            .unwrap()
            .node_daemons()
            .unwrap();
        assert_eq!(cfg.web_vip_device.as_deref(), Some("tunl0"));
    }

    #[test]
    fn bad_selectors_and_tolerations_are_refused_with_the_flag_named() {
        for (arg, flag) in [
            (
                "--balancer-node-selector=lvstun.io/balancer=true",
                "--balancer-node-selector",
            ),
            (
                r#"--web-node-selector={"bad key!":"x"}"#,
                "--web-node-selector",
            ),
            (
                r#"--web-node-selector={"k":"not a value"}"#,
                "--web-node-selector",
            ),
            (
                r#"--balancer-tolerations={"operator":"Exists"}"#,
                "--balancer-tolerations",
            ),
            (
                r#"--web-tolerations=[{"operator":"Maybe"}]"#,
                "--web-tolerations",
            ),
            (
                r#"--web-tolerations=[{"operator":"Exists","value":"x"}]"#,
                "--web-tolerations",
            ),
            (r#"--web-tolerations=[{"value":"x"}]"#, "--web-tolerations"),
            (
                r#"--web-tolerations=[{"operator":"Exists","effect":"Never"}]"#,
                "--web-tolerations",
            ),
            ("--web-vip-device=", "--web-vip-device"),
            ("--web-vip-device=much-too-long-name", "--web-vip-device"),
            ("--web-vip-device=lvs 0", "--web-vip-device"),
        ] {
            let e = parse(&[arg]).unwrap_err().to_string();
            assert!(e.contains(flag), "{arg}: {e}");
        }
    }

    #[test]
    fn without_node_image_the_daemonsets_run_the_node_image_of_this_version() {
        let cli = Cli::try_parse_from([
            "lvstun-operator",
            "--balancer-service-account=b",
            "--web-service-account=w",
            "--lease-name=l",
            "--namespace=n",
            "--pod-name=p",
        ])
        .unwrap();
        assert_eq!(
            cli.node_daemons().unwrap().image,
            format!("localhost/lvstun/lvstun-node:{}", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn bad_values_are_refused_with_the_flag_named() {
        let e = parse(&["--node-image-pull-policy=Sometimes"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--node-image-pull-policy"), "{e}");
        let e = parse(&["--metrics-port=0"]).unwrap_err().to_string();
        assert!(e.contains("--metrics-port"), "{e}");
        let cli = parse(&["--web-service-account=lvstun-balancer"]).unwrap();
        assert!(
            cli.node_daemons()
                .unwrap_err()
                .to_string()
                .contains("both be named")
        );
        assert_eq!(
            parse(&["--metrics-port=9999"]).unwrap().metrics_port,
            9999,
            "the last value wins"
        );
    }
}
