//! Translation between the typed model ([`super::model`]) and IPVS netlink
//! messages ([`super::message`]): which attributes each request carries, and
//! how a dump reply becomes a [`Service`] or [`Destination`]. Pure, no I/O.
//!
//! Requests carry what the kernel requires (see `ip_vs_genl_parse_service`
//! and `ip_vs_genl_parse_dest`): the identifying attributes always, the full
//! configuration for NEW/SET. Flags go with mask `!0`, as ipvsadm sends them,
//! so the kernel's flags become exactly ours.

use std::net::IpAddr;
use std::num::NonZeroU16;

use super::message::dest::{
    FWD_LOCAL, FWD_MASQ, FWD_ROUTE, FWD_TUNNEL, TUN_FLAG_CSUM, TUN_FLAG_REMCSUM, TUN_TYPE_GRE,
    TUN_TYPE_GUE, TUN_TYPE_IPIP,
};
use super::message::stats::to_stats;
use super::message::{
    DaemonAttr, DestAttr, FlagsMask, InetAddr, IpvsAttr, IpvsCmd, IpvsMessage, ServiceAttr,
};
use super::model::{
    AddressFamily, ConnCounts, DestConfig, DestKey, Destination, Forward, GueChecksum, IfName,
    IpvsInfo, Op, Persistence, Protocol, Scheduler, Service, ServiceConfig, ServiceFlags,
    ServiceKey, SyncDaemon, SyncRole, Thresholds, Tunnel, Weight, netmask_from_wire,
    netmask_to_wire,
};
use crate::error::Error;

/// `IP_VS_CONN_F_FWD_MASK`.
const FWD_MASK: u32 = 0x0007;

/// The attributes that identify a service (enough for DEL and GET).
pub fn service_key_attrs(key: &ServiceKey) -> Vec<ServiceAttr> {
    match key {
        ServiceKey::Addr {
            address,
            protocol,
            port,
        } => vec![
            ServiceAttr::AddressFamily(AddressFamily::of(*address).raw()),
            ServiceAttr::Protocol(protocol.number()),
            ServiceAttr::Address(InetAddr::from_ip(*address)),
            ServiceAttr::Port(*port),
        ],
        ServiceKey::Fwmark { family, mark } => vec![
            ServiceAttr::AddressFamily(family.raw()),
            ServiceAttr::Fwmark(*mark),
        ],
    }
}

/// The attributes of a full service (NEW and SET need all of them).
pub fn service_attrs(key: &ServiceKey, config: &ServiceConfig) -> Vec<ServiceAttr> {
    let family = key.family();
    let mut attrs = service_key_attrs(key);
    let mut flags = config.flags.bits();
    let (timeout, netmask) = match config.persistence {
        Some(p) => {
            flags |= ServiceFlags::PERSISTENT_BIT;
            (p.timeout_secs, netmask_to_wire(family, p.netmask_prefix))
        }
        None => {
            let host = match family {
                AddressFamily::Inet => 32,
                AddressFamily::Inet6 => 128,
            };
            (0, netmask_to_wire(family, host))
        }
    };
    attrs.extend([
        ServiceAttr::SchedName(config.scheduler.name().to_owned()),
        ServiceAttr::Flags(FlagsMask { flags, mask: !0 }),
        ServiceAttr::Timeout(timeout),
        ServiceAttr::Netmask(netmask),
    ]);
    attrs
}

/// The attributes that identify a destination (enough for DEL).
pub fn dest_key_attrs(dest: &DestKey) -> Vec<DestAttr> {
    vec![
        DestAttr::Address(InetAddr::from_ip(dest.address)),
        DestAttr::Port(dest.port),
        DestAttr::AddressFamily(AddressFamily::of(dest.address).raw()),
    ]
}

/// The attributes of a full destination (NEW and SET need all of them; the
/// tunnel ones only for tunnel forwarding, where absence means ipip/0/0).
pub fn dest_attrs(dest: &DestKey, config: &DestConfig) -> Vec<DestAttr> {
    let mut attrs = dest_key_attrs(dest);
    let fwd = match config.forward {
        Forward::Masq => FWD_MASQ,
        Forward::Local => FWD_LOCAL,
        Forward::Tunnel(_) => FWD_TUNNEL,
        Forward::Route => FWD_ROUTE,
    };
    attrs.extend([
        DestAttr::FwdMethod(fwd),
        DestAttr::Weight(config.weight.get()),
        DestAttr::UpperThreshold(config.thresholds.upper()),
        DestAttr::LowerThreshold(config.thresholds.lower()),
    ]);
    if let Forward::Tunnel(tunnel) = config.forward {
        let (kind, port, flags) = match tunnel {
            Tunnel::Ipip => (TUN_TYPE_IPIP, 0, 0),
            Tunnel::Gue { port, checksum } => (
                TUN_TYPE_GUE,
                port.get(),
                match checksum {
                    GueChecksum::None => 0,
                    GueChecksum::Csum => TUN_FLAG_CSUM,
                    GueChecksum::Remote => TUN_FLAG_REMCSUM,
                },
            ),
            Tunnel::Gre { checksum } => (TUN_TYPE_GRE, 0, if checksum { TUN_FLAG_CSUM } else { 0 }),
        };
        attrs.extend([
            DestAttr::TunType(kind),
            DestAttr::TunPort(port),
            DestAttr::TunFlags(flags),
        ]);
    }
    attrs
}

/// The request that carries out one table operation.
pub fn op_message(op: &Op) -> IpvsMessage {
    match op {
        Op::NewService { key, config } => IpvsMessage::new(
            IpvsCmd::NewService,
            vec![IpvsAttr::Service(service_attrs(key, config))],
        ),
        Op::SetService { key, config } => IpvsMessage::new(
            IpvsCmd::SetService,
            vec![IpvsAttr::Service(service_attrs(key, config))],
        ),
        Op::DelService { key } => IpvsMessage::new(
            IpvsCmd::DelService,
            vec![IpvsAttr::Service(service_key_attrs(key))],
        ),
        Op::NewDest {
            service,
            dest,
            config,
        } => IpvsMessage::new(
            IpvsCmd::NewDest,
            vec![
                IpvsAttr::Service(service_key_attrs(service)),
                IpvsAttr::Dest(dest_attrs(dest, config)),
            ],
        ),
        Op::SetDest {
            service,
            dest,
            config,
        } => IpvsMessage::new(
            IpvsCmd::SetDest,
            vec![
                IpvsAttr::Service(service_key_attrs(service)),
                IpvsAttr::Dest(dest_attrs(dest, config)),
            ],
        ),
        Op::DelDest { service, dest } => IpvsMessage::new(
            IpvsCmd::DelDest,
            vec![
                IpvsAttr::Service(service_key_attrs(service)),
                IpvsAttr::Dest(dest_key_attrs(dest)),
            ],
        ),
    }
}

/// The request that starts a sync daemon.
pub fn start_daemon_message(daemon: &SyncDaemon) -> IpvsMessage {
    let mut attrs = vec![
        DaemonAttr::State(daemon.role.raw()),
        DaemonAttr::McastIfn(daemon.ifname.as_str().to_owned()),
        DaemonAttr::SyncId(u32::from(daemon.sync_id)),
    ];
    if let Some(len) = daemon.max_len {
        attrs.push(DaemonAttr::SyncMaxLen(len));
    }
    match daemon.group {
        Some(IpAddr::V4(group)) => attrs.push(DaemonAttr::McastGroup(group)),
        Some(IpAddr::V6(group)) => attrs.push(DaemonAttr::McastGroup6(group)),
        None => {}
    }
    if let Some(port) = daemon.port {
        attrs.push(DaemonAttr::McastPort(port));
    }
    if let Some(ttl) = daemon.ttl {
        attrs.push(DaemonAttr::McastTtl(ttl));
    }
    IpvsMessage::new(IpvsCmd::NewDaemon, vec![IpvsAttr::Daemon(attrs)])
}

/// The request that stops the sync daemon of `role`.
pub fn stop_daemon_message(role: SyncRole) -> IpvsMessage {
    IpvsMessage::new(
        IpvsCmd::DelDaemon,
        vec![IpvsAttr::Daemon(vec![DaemonAttr::State(role.raw())])],
    )
}

fn missing(what: &'static str, attr: &str) -> Error {
    Error::decode(what, format!("{attr} missing"))
}

/// Reads one service from the attributes of a dump reply.
pub fn parse_service(attrs: &[ServiceAttr]) -> Result<Service, Error> {
    const WHAT: &str = "IPVS service";
    let (mut af, mut protocol, mut address, mut port, mut fwmark) = (None, None, None, None, None);
    let (mut sched, mut flags, mut timeout, mut netmask) = (None, None, 0, None);
    let (mut stats32, mut stats64) = (None, None);
    for attr in attrs {
        match attr {
            ServiceAttr::AddressFamily(v) => af = Some(*v),
            ServiceAttr::Protocol(v) => protocol = Some(*v),
            ServiceAttr::Address(v) => address = Some(*v),
            ServiceAttr::Port(v) => port = Some(*v),
            ServiceAttr::Fwmark(v) => fwmark = Some(*v),
            ServiceAttr::SchedName(v) => sched = Some(v.as_str()),
            ServiceAttr::Flags(v) => flags = Some(v.flags),
            ServiceAttr::Timeout(v) => timeout = *v,
            ServiceAttr::Netmask(v) => netmask = Some(*v),
            ServiceAttr::Stats(v) => stats32 = Some(v.as_slice()),
            ServiceAttr::Stats64(v) => stats64 = Some(v.as_slice()),
            ServiceAttr::PeName(_) | ServiceAttr::Other(_) => {}
        }
    }
    let af = af.ok_or_else(|| missing(WHAT, "IPVS_SVC_ATTR_AF"))?;
    let family = AddressFamily::from_raw(af)
        .ok_or_else(|| Error::decode(WHAT, format!("address family {af}")))?;
    let key = match fwmark.filter(|m| *m != 0) {
        Some(mark) => ServiceKey::Fwmark { family, mark },
        None => {
            let number = protocol.ok_or_else(|| missing(WHAT, "IPVS_SVC_ATTR_PROTOCOL"))?;
            ServiceKey::Addr {
                address: address
                    .ok_or_else(|| missing(WHAT, "IPVS_SVC_ATTR_ADDR"))?
                    .to_ip(family),
                protocol: Protocol::from_number(number)
                    .ok_or_else(|| Error::decode(WHAT, format!("IP protocol {number}")))?,
                port: port.ok_or_else(|| missing(WHAT, "IPVS_SVC_ATTR_PORT"))?,
            }
        }
    };
    let scheduler = Scheduler::new(sched.ok_or_else(|| missing(WHAT, "IPVS_SVC_ATTR_SCHED_NAME"))?)
        .map_err(|e| Error::decode(WHAT, e))?;
    let (flags, persistent) = ServiceFlags::from_kernel(flags.unwrap_or(0));
    let persistence = if persistent {
        let raw = netmask.ok_or_else(|| missing(WHAT, "IPVS_SVC_ATTR_NETMASK"))?;
        Some(Persistence {
            timeout_secs: timeout,
            netmask_prefix: netmask_from_wire(family, raw).map_err(|e| Error::decode(WHAT, e))?,
        })
    } else {
        None
    };
    Ok(Service {
        key,
        config: ServiceConfig {
            scheduler,
            flags,
            persistence,
        },
        stats: stats64.or(stats32).map(to_stats).unwrap_or_default(),
    })
}

fn parse_forward(fwd: u32, tun_type: u8, tun_port: u16, tun_flags: u16) -> Result<Forward, Error> {
    const WHAT: &str = "IPVS destination forwarding";
    Ok(match fwd & FWD_MASK {
        FWD_MASQ => Forward::Masq,
        FWD_LOCAL => Forward::Local,
        FWD_ROUTE => Forward::Route,
        FWD_TUNNEL => Forward::Tunnel(match tun_type {
            TUN_TYPE_IPIP => Tunnel::Ipip,
            TUN_TYPE_GUE => Tunnel::Gue {
                port: NonZeroU16::new(tun_port)
                    .ok_or_else(|| Error::decode(WHAT, "GUE tunnel with port 0"))?,
                checksum: if tun_flags & TUN_FLAG_REMCSUM != 0 {
                    GueChecksum::Remote
                } else if tun_flags & TUN_FLAG_CSUM != 0 {
                    GueChecksum::Csum
                } else {
                    GueChecksum::None
                },
            },
            TUN_TYPE_GRE => Tunnel::Gre {
                checksum: tun_flags & TUN_FLAG_CSUM != 0,
            },
            other => return Err(Error::decode(WHAT, format!("tunnel type {other}"))),
        }),
        other => return Err(Error::decode(WHAT, format!("method {other}"))),
    })
}

/// Reads one destination from the attributes of a dump reply; `service_family`
/// applies when the kernel omits the destination's own family.
pub fn parse_dest(attrs: &[DestAttr], service_family: AddressFamily) -> Result<Destination, Error> {
    const WHAT: &str = "IPVS destination";
    let (mut address, mut port, mut af) = (None, None, None);
    let (mut fwd, mut weight, mut upper, mut lower) = (None, None, 0, 0);
    let (mut tun_type, mut tun_port, mut tun_flags) = (0, 0, 0);
    let mut conns = ConnCounts::default();
    let (mut stats32, mut stats64) = (None, None);
    for attr in attrs {
        match attr {
            DestAttr::Address(v) => address = Some(*v),
            DestAttr::Port(v) => port = Some(*v),
            DestAttr::FwdMethod(v) => fwd = Some(*v),
            DestAttr::Weight(v) => weight = Some(*v),
            DestAttr::UpperThreshold(v) => upper = *v,
            DestAttr::LowerThreshold(v) => lower = *v,
            DestAttr::ActiveConns(v) => conns.active = *v,
            DestAttr::InactConns(v) => conns.inactive = *v,
            DestAttr::PersistConns(v) => conns.persistent = *v,
            DestAttr::Stats(v) => stats32 = Some(v.as_slice()),
            DestAttr::Stats64(v) => stats64 = Some(v.as_slice()),
            DestAttr::AddressFamily(v) => af = Some(*v),
            DestAttr::TunType(v) => tun_type = *v,
            DestAttr::TunPort(v) => tun_port = *v,
            DestAttr::TunFlags(v) => tun_flags = *v,
            DestAttr::Other(_) => {}
        }
    }
    let family = match af {
        Some(raw) => AddressFamily::from_raw(raw)
            .ok_or_else(|| Error::decode(WHAT, format!("address family {raw}")))?,
        None => service_family,
    };
    let key = DestKey {
        address: address
            .ok_or_else(|| missing(WHAT, "IPVS_DEST_ATTR_ADDR"))?
            .to_ip(family),
        port: port.ok_or_else(|| missing(WHAT, "IPVS_DEST_ATTR_PORT"))?,
    };
    let fwd = fwd.ok_or_else(|| missing(WHAT, "IPVS_DEST_ATTR_FWD_METHOD"))?;
    let weight = weight.ok_or_else(|| missing(WHAT, "IPVS_DEST_ATTR_WEIGHT"))?;
    Ok(Destination {
        key,
        config: DestConfig {
            weight: Weight::new(weight).map_err(|e| Error::decode(WHAT, e))?,
            forward: parse_forward(fwd, tun_type, tun_port, tun_flags)?,
            thresholds: Thresholds::new(upper, lower).map_err(|e| Error::decode(WHAT, e))?,
        },
        conns,
        stats: stats64.or(stats32).map(to_stats).unwrap_or_default(),
    })
}

/// Reads one sync daemon from the attributes of a dump reply.
pub fn parse_daemon(attrs: &[DaemonAttr]) -> Result<SyncDaemon, Error> {
    const WHAT: &str = "IPVS sync daemon";
    let (mut state, mut ifname, mut sync_id) = (None, None, None);
    let mut daemon_extra = (None, None, None, None);
    for attr in attrs {
        match attr {
            DaemonAttr::State(v) => state = Some(*v),
            DaemonAttr::McastIfn(v) => ifname = Some(v.as_str()),
            DaemonAttr::SyncId(v) => sync_id = Some(*v),
            DaemonAttr::SyncMaxLen(v) => daemon_extra.0 = Some(*v),
            DaemonAttr::McastGroup(v) => daemon_extra.1 = Some(IpAddr::V4(*v)),
            DaemonAttr::McastGroup6(v) => daemon_extra.1 = Some(IpAddr::V6(*v)),
            DaemonAttr::McastPort(v) => daemon_extra.2 = Some(*v),
            DaemonAttr::McastTtl(v) => daemon_extra.3 = Some(*v),
            DaemonAttr::Other(_) => {}
        }
    }
    let state = state.ok_or_else(|| missing(WHAT, "IPVS_DAEMON_ATTR_STATE"))?;
    let role =
        SyncRole::from_raw(state).ok_or_else(|| Error::decode(WHAT, format!("state {state}")))?;
    let ifname = IfName::new(ifname.ok_or_else(|| missing(WHAT, "IPVS_DAEMON_ATTR_MCAST_IFN"))?)
        .map_err(|e| Error::decode(WHAT, e))?;
    let sync_id = sync_id.ok_or_else(|| missing(WHAT, "IPVS_DAEMON_ATTR_SYNC_ID"))?;
    Ok(SyncDaemon {
        role,
        ifname,
        sync_id: u8::try_from(sync_id)
            .map_err(|_| Error::decode(WHAT, format!("sync id {sync_id}")))?,
        max_len: daemon_extra.0,
        group: daemon_extra.1,
        port: daemon_extra.2,
        ttl: daemon_extra.3,
    })
}

/// Reads the reply to `GET_INFO`.
pub fn parse_info(msg: &IpvsMessage) -> Result<IpvsInfo, Error> {
    let mut info = (None, None);
    for attr in &msg.attrs {
        match attr {
            IpvsAttr::InfoVersion(v) => info.0 = Some(*v),
            IpvsAttr::InfoConnTabSize(v) => info.1 = Some(*v),
            _ => {}
        }
    }
    match info {
        (Some(version), Some(conn_tab_size)) => Ok(IpvsInfo {
            version,
            conn_tab_size,
        }),
        _ => Err(missing("IPVS info", "IPVS_INFO_ATTR_VERSION/CONN_TAB_SIZE")),
    }
}

/// The service nest of a message, if it has one.
pub fn service_nest(msg: &IpvsMessage) -> Option<&[ServiceAttr]> {
    msg.attrs.iter().find_map(|a| match a {
        IpvsAttr::Service(attrs) => Some(attrs.as_slice()),
        _ => None,
    })
}

/// The destination nest of a message, if it has one.
pub fn dest_nest(msg: &IpvsMessage) -> Option<&[DestAttr]> {
    msg.attrs.iter().find_map(|a| match a {
        IpvsAttr::Dest(attrs) => Some(attrs.as_slice()),
        _ => None,
    })
}

/// The daemon nest of a message, if it has one.
pub fn daemon_nest(msg: &IpvsMessage) -> Option<&[DaemonAttr]> {
    msg.attrs.iter().find_map(|a| match a {
        IpvsAttr::Daemon(attrs) => Some(attrs.as_slice()),
        _ => None,
    })
}
