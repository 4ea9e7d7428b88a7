//! Command line and environment of `lvstun-operator`, as the chart's Deployment passes them.
//!
//! No I/O: parsing and turning the flags into the typed configuration the other modules take.

use clap::{Parser, ValueEnum};

use crate::build::{NodeDaemonConfig, RoleConfig};
use crate::error::Error;
use crate::leader::LeaseConfig;

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

/// `lvstun-operator`: shapes the balancer and web DaemonSets from VirtualService and RealServer
/// objects and folds the node daemons' reports into their status. A flag given twice takes its
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
            },
            web: RoleConfig {
                daemonset_name: self
                    .web_daemonset_name
                    .clone()
                    .unwrap_or_else(|| self.web_service_account.clone()),
                service_account: self.web_service_account.clone(),
                health_port: self.web_health_port,
            },
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
