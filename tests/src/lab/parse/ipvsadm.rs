//! The IPVS table and the sync daemons as `ipvsadm` lists them, typed: `ipvsadm -Sn` (the
//! rules, one per line) and `ipvsadm -Ln` (services with their destinations) both parse into an
//! [`IpvsTable`]; `ipvsadm -L --daemon` parses into [`SyncDaemon`]s. Pure, no I/O.
//!
//! Lab tests compare these values, not substrings: a check such as "lb1's table holds TCP
//! 192.0.2.100:80 rr with both real servers via tunnel" is a comparison of typed fields, and
//! an option ipvsadm prints that the parser does not know is kept (in `options`), never
//! dropped, so an equality over a service or a destination still covers everything printed.

use std::collections::BTreeMap;

/// The protocol of a virtual service (`-t`/`-u`/`--sctp-service`/`-f`, or `TCP`/`UDP`/...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// `-t`, `TCP`.
    Tcp,
    /// `-u`, `UDP`.
    Udp,
    /// `--sctp-service`, `SCTP`.
    Sctp,
    /// `-f`, `FWM` (a firewall mark, not an address).
    Fwm,
}

impl Protocol {
    fn from_listing(word: &str) -> Option<Self> {
        match word {
            "TCP" => Some(Self::Tcp),
            "UDP" => Some(Self::Udp),
            "SCTP" => Some(Self::Sctp),
            "FWM" => Some(Self::Fwm),
            _ => None,
        }
    }

    fn from_flag(flag: &str) -> Option<Self> {
        match flag {
            "-t" | "--tcp-service" => Some(Self::Tcp),
            "-u" | "--udp-service" => Some(Self::Udp),
            "--sctp-service" => Some(Self::Sctp),
            "-f" | "--fwmark-service" => Some(Self::Fwm),
            _ => None,
        }
    }
}

/// How a destination is reached (`-i`/`-g`/`-m`, or `Tunnel`/`Route`/`Masq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Forward {
    /// IP-in-IP (or GUE/GRE) tunnel: LVS-TUN.
    Tunnel,
    /// Direct routing (`-g`, gatewaying).
    Route,
    /// NAT (`-m`, masquerading).
    Masq,
    /// `Local` in listings: the destination is this node.
    Local,
}

impl Forward {
    fn from_listing(word: &str) -> Option<Self> {
        match word {
            "Tunnel" => Some(Self::Tunnel),
            "Route" => Some(Self::Route),
            "Masq" => Some(Self::Masq),
            "Local" => Some(Self::Local),
            _ => None,
        }
    }

    fn from_flag(flag: &str) -> Option<Self> {
        match flag {
            "-i" | "--ipip" => Some(Self::Tunnel),
            "-g" | "--gatewaying" => Some(Self::Route),
            "-m" | "--masquerading" => Some(Self::Masq),
            _ => None,
        }
    }
}

/// One destination (real server) of a service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpvsDest {
    /// `address:port` as ipvsadm prints it.
    pub address: String,
    /// How packets reach it.
    pub forward: Forward,
    /// Its weight (0: no new connections).
    pub weight: u32,
    /// What `-Sn` prints after the weight (`--tun-type ipip`, `-x 10`, ...) or `-Ln --tun-info`
    /// in its TunnelInfo column (`ipip`, `gue:6080:+c`), as printed, in order.
    pub options: Vec<String>,
}

/// One virtual service with its destinations in ipvsadm's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsService {
    /// Its protocol.
    pub protocol: Protocol,
    /// `address:port`, or the mark for [`Protocol::Fwm`].
    pub address: String,
    /// The scheduler's name (`rr`, `wrr`, `sh`, `mh`, ...).
    pub scheduler: String,
    /// What follows the scheduler, as printed (`-p 300 -M 255.255.255.0 -b mh-port` from
    /// `-Sn`; `(mh-port) persistent 300 mask 255.255.255.0` from `-Ln`); empty for a plain
    /// service.
    pub options: Vec<String>,
    /// Its destinations, in the order ipvsadm listed them (the kernel's list order for `-Ln`).
    pub destinations: Vec<IpvsDest>,
}

impl IpvsService {
    /// The destination at `address`, if the service has one.
    pub fn destination(&self, address: &str) -> Option<&IpvsDest> {
        self.destinations.iter().find(|d| d.address == address)
    }

    /// The destinations' addresses in list order.
    pub fn destination_addresses(&self) -> Vec<&str> {
        self.destinations
            .iter()
            .map(|d| d.address.as_str())
            .collect()
    }
}

/// A whole IPVS table as listed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IpvsTable {
    /// The services in ipvsadm's order.
    pub services: Vec<IpvsService>,
}

impl IpvsTable {
    /// The service `protocol address`, if listed.
    pub fn service(&self, protocol: Protocol, address: &str) -> Option<&IpvsService> {
        self.services
            .iter()
            .find(|s| s.protocol == protocol && s.address == address)
    }

    /// The services whose address is `vip` (any port).
    pub fn services_on(&self, vip: &str) -> Vec<&IpvsService> {
        self.services
            .iter()
            .filter(|s| s.address.rsplit_once(':').is_some_and(|(a, _)| a == vip))
            .collect()
    }
}

/// Parses `ipvsadm -Sn` (or `--save -n`): `-A` lines make services, `-a` lines add
/// destinations to the service they name (which must have been listed before).
pub fn save(text: &str) -> Result<IpvsTable, String> {
    let mut table = IpvsTable::default();
    for (n, line) in text.lines().enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        match words.as_slice() {
            [] => {}
            ["-A", proto, address, rest @ ..] => {
                let protocol = Protocol::from_flag(proto)
                    .ok_or_else(|| at(format!("unknown protocol {proto}")))?;
                let (scheduler, options) = match rest {
                    ["-s", scheduler, options @ ..] => ((*scheduler).to_owned(), options),
                    _ => return Err(at("no -s scheduler after the service".into())),
                };
                table.services.push(IpvsService {
                    protocol,
                    address: (*address).to_owned(),
                    scheduler,
                    options: options.iter().map(|w| (*w).to_owned()).collect(),
                    destinations: Vec::new(),
                });
            }
            [
                "-a",
                proto,
                address,
                "-r",
                dest,
                forward,
                "-w",
                weight,
                options @ ..,
            ] => {
                let protocol = Protocol::from_flag(proto)
                    .ok_or_else(|| at(format!("unknown protocol {proto}")))?;
                let forward = Forward::from_flag(forward)
                    .ok_or_else(|| at(format!("unknown forwarding {forward}")))?;
                let weight = weight
                    .parse()
                    .map_err(|_| at(format!("weight {weight} is not a number")))?;
                let service = table
                    .services
                    .iter_mut()
                    .find(|s| s.protocol == protocol && s.address == *address)
                    .ok_or_else(|| at("destination of a service not listed before".into()))?;
                service.destinations.push(IpvsDest {
                    address: (*dest).to_owned(),
                    forward,
                    weight,
                    options: options.iter().map(|w| (*w).to_owned()).collect(),
                });
            }
            _ => return Err(at("neither -A nor -a -r ADDR FWD -w W".into())),
        }
    }
    Ok(table)
}

/// Parses `ipvsadm -Ln` (with or without `--tun-info`): service lines (`TCP  VIP:80 rr ...`)
/// and their `->` destination lines (`address Forward [TunnelInfo] Weight ActiveConn
/// InActConn`); the banner and column headers are skipped. `--stats`/`--rate` listings are
/// not this format: see [`super::ipvs_stats`].
pub fn list(text: &str) -> Result<IpvsTable, String> {
    let mut table = IpvsTable::default();
    for (n, line) in text.lines().enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = |e: &str| format!("line {}: {e}: {line:?}", n + 1);
        match words.as_slice() {
            [proto, address, scheduler, options @ ..]
                if Protocol::from_listing(proto).is_some() =>
            {
                table.services.push(IpvsService {
                    protocol: Protocol::from_listing(proto).ok_or_else(|| at("protocol"))?,
                    address: (*address).to_owned(),
                    scheduler: (*scheduler).to_owned(),
                    options: options.iter().map(|w| (*w).to_owned()).collect(),
                    destinations: Vec::new(),
                });
            }
            ["->", "RemoteAddress:Port", ..] => {}
            ["->", address, forward, rest @ ..] => {
                let forward =
                    Forward::from_listing(forward).ok_or_else(|| at("unknown forwarding"))?;
                // Weight ActiveConn InActConn, after an optional TunnelInfo column.
                let (options, weight) = match rest {
                    [weight, _, _] => (Vec::new(), *weight),
                    [info, weight, _, _] => (vec![(*info).to_owned()], *weight),
                    _ => return Err(at("expected Weight ActiveConn InActConn")),
                };
                let weight = weight.parse().map_err(|_| at("weight is not a number"))?;
                let service = table
                    .services
                    .last_mut()
                    .ok_or_else(|| at("destination before any service"))?;
                service.destinations.push(IpvsDest {
                    address: (*address).to_owned(),
                    forward,
                    weight,
                    options,
                });
            }
            _ => {} // banner, column headers, blank lines
        }
    }
    Ok(table)
}

/// Which side of IPVS connection sync a daemon is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncRole {
    /// Sends this node's connections.
    Master,
    /// Receives another node's.
    Backup,
}

/// One line of `ipvsadm -L --daemon`: `master sync daemon (mcast=eth0, syncid=51, ...)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncDaemon {
    /// Master or backup.
    pub role: SyncRole,
    /// The parenthesised `key=value` settings (`mcast`, `syncid`, `maxlen`, `group`, ...).
    pub settings: BTreeMap<String, String>,
}

impl SyncDaemon {
    /// The interface it sends or listens on (`mcast=`).
    pub fn interface(&self) -> Option<&str> {
        self.settings.get("mcast").map(String::as_str)
    }

    /// Its sync ID (`syncid=`), which lvstun sets to the VRID.
    pub fn sync_id(&self) -> Option<u32> {
        self.settings.get("syncid")?.parse().ok()
    }
}

/// Parses `ipvsadm -L --daemon`: one [`SyncDaemon`] per line; an empty listing (no daemon
/// running) is an empty list.
pub fn sync_daemons(text: &str) -> Result<Vec<SyncDaemon>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let at = |e: &str| format!("line {}: {e}: {line:?}", n + 1);
        let (role, rest) = if let Some(rest) = line.strip_prefix("master sync daemon") {
            (SyncRole::Master, rest)
        } else if let Some(rest) = line.strip_prefix("backup sync daemon") {
            (SyncRole::Backup, rest)
        } else {
            return Err(at("not a sync daemon line"));
        };
        let inner = rest
            .trim()
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(|| at("no (settings)"))?;
        let settings = inner
            .split(',')
            .map(|kv| {
                kv.trim()
                    .split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .ok_or_else(|| at("a setting without ="))
            })
            .collect::<Result<_, _>>()?;
        out.push(SyncDaemon { role, settings });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// balancer-standalone, phase 5 (web1 down: weight 0), with the foreign service beside.
    const SAVE: &str = "\
-A -t 192.0.2.100:80 -s rr
-A -t 192.0.2.200:443 -s rr
-a -t 192.0.2.100:80 -r 198.51.100.10:80 -i -w 0 --tun-type ipip
-a -t 192.0.2.100:80 -r 198.51.100.130:80 -i -w 2 --tun-type ipip
-a -t 192.0.2.200:443 -r 198.51.100.10:443 -g -w 4
";

    /// ipvs-netlink's first apply: every tunnel type, flags, persistence, a netmask.
    const SAVE_NETLINK: &str = "\
-A -t 192.0.2.100:8080 -s rr
-A -u 192.0.2.100:53 -s mh -p 300 -M 255.255.255.0 -b mh-port
-a -t 192.0.2.100:8080 -r 198.51.100.10:8080 -i -w 1 --tun-type gue --tun-port 6080 --tun-csum
-a -u 192.0.2.100:53 -r 198.51.100.10:53 -g -w 1
";

    /// ipvs-netlink's witness (`ipvsadm -Ln --tun-info`).
    const LIST_TUN: &str = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn
TCP  192.0.2.100:8080 rr
  -> 198.51.100.10:8080           Tunnel  gue:6080:+c   1      0          0         
  -> 198.51.100.130:8080          Tunnel  gre:+c        2      0          0         
UDP  192.0.2.100:53 mh (mh-port) persistent 300 mask 255.255.255.0
  -> 198.51.100.10:53             Route   n/a           1      0          0         
";

    /// balancer-vrrp's witness on lb1 (`ipvsadm -Ln`).
    const LIST: &str = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  192.0.2.100:80 rr
  -> 198.51.100.10:80             Tunnel  1      0          3         
  -> 198.51.100.130:80            Tunnel  1      0          3         
";

    #[test]
    fn save_reads_services_and_their_destinations() {
        let t = save(SAVE).unwrap();
        assert_eq!(t.services.len(), 2);
        let s = t.service(Protocol::Tcp, "192.0.2.100:80").unwrap();
        assert_eq!(s.scheduler, "rr");
        assert!(s.options.is_empty());
        assert_eq!(
            s.destinations,
            [
                IpvsDest {
                    address: "198.51.100.10:80".into(),
                    forward: Forward::Tunnel,
                    weight: 0,
                    options: vec!["--tun-type".into(), "ipip".into()],
                },
                IpvsDest {
                    address: "198.51.100.130:80".into(),
                    forward: Forward::Tunnel,
                    weight: 2,
                    options: vec!["--tun-type".into(), "ipip".into()],
                },
            ]
        );
        let foreign = t.service(Protocol::Tcp, "192.0.2.200:443").unwrap();
        assert_eq!(foreign.destinations[0].forward, Forward::Route);
        assert!(foreign.destinations[0].options.is_empty());
        assert_eq!(t.services_on("192.0.2.200").len(), 1);
        assert!(t.service(Protocol::Udp, "192.0.2.100:80").is_none());
    }

    #[test]
    fn save_keeps_every_option_it_does_not_type() {
        let t = save(SAVE_NETLINK).unwrap();
        let udp = t.service(Protocol::Udp, "192.0.2.100:53").unwrap();
        assert_eq!(udp.scheduler, "mh");
        assert_eq!(
            udp.options,
            ["-p", "300", "-M", "255.255.255.0", "-b", "mh-port"]
        );
        let gue = &t.services[0].destinations[0];
        assert_eq!(
            gue.options,
            ["--tun-type", "gue", "--tun-port", "6080", "--tun-csum"]
        );
    }

    #[test]
    fn save_refuses_what_it_cannot_place() {
        assert!(save("-a -t 192.0.2.100:80 -r 198.51.100.10:80 -i -w 1\n").is_err());
        assert!(save("-A -t 192.0.2.100:80\n").is_err());
        assert!(save("-A -x 192.0.2.100:80 -s rr\n").is_err());
        assert!(save("garbage\n").is_err());
        assert_eq!(save("").unwrap(), IpvsTable::default());
    }

    #[test]
    fn list_reads_the_kernels_order_and_the_tunnel_column() {
        let t = list(LIST).unwrap();
        let s = t.service(Protocol::Tcp, "192.0.2.100:80").unwrap();
        assert_eq!(s.scheduler, "rr");
        assert_eq!(
            s.destination_addresses(),
            ["198.51.100.10:80", "198.51.100.130:80"]
        );
        assert!(
            s.destinations
                .iter()
                .all(|d| d.forward == Forward::Tunnel && d.weight == 1 && d.options.is_empty())
        );
        let t = list(LIST_TUN).unwrap();
        assert_eq!(t.services[0].destinations[1].options, ["gre:+c"]);
        assert_eq!(t.services[0].destinations[1].weight, 2);
        assert_eq!(
            t.services[1].options,
            ["(mh-port)", "persistent", "300", "mask", "255.255.255.0"]
        );
        assert_eq!(t.services[1].destinations[0].forward, Forward::Route);
        assert!(list("  -> 198.51.100.10:80 Tunnel 1 0 0\n").is_err());
    }

    #[test]
    fn sync_daemons_read_role_interface_and_id() {
        let d = sync_daemons(
            "master sync daemon (mcast=eth0, syncid=51, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n",
        )
        .unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].role, SyncRole::Master);
        assert_eq!(d[0].interface(), Some("eth0"));
        assert_eq!(d[0].sync_id(), Some(51));
        assert_eq!(d[0].settings["group"], "224.0.0.81");
        let d = sync_daemons("backup sync daemon (mcast=eth0, syncid=5)\n").unwrap();
        assert_eq!((d[0].role, d[0].sync_id()), (SyncRole::Backup, Some(5)));
        assert_eq!(sync_daemons("\n").unwrap(), vec![]);
        assert!(sync_daemons("some sync daemon (x=1)\n").is_err());
    }
}
