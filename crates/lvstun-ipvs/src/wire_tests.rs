//! Exact-byte tests of the IPVS wire format, both ways: requests built from
//! the model are compared with bytes written out by hand from the layouts in
//! `ip_vs.h` (netlink header, genl header, `struct nlattr` TLVs, 4-byte
//! alignment); kernel replies laid out by hand in the order
//! `ip_vs_genl_fill_service`/`_fill_dest` put them are parsed into the model
//! and emitted back unchanged. Host-order fields are little-endian here.
#![cfg(target_endian = "little")]

use std::net::IpAddr;
use std::num::NonZeroU16;

use netlink_packet_core::{
    Emitable, NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    ParseableParametrized,
};
use netlink_packet_generic::{GenlHeader, GenlMessage};

use super::convert;
use super::message::{DestAttr, IpvsAttr, IpvsCmd, IpvsMessage, ServiceAttr};
use super::model::{
    AddressFamily, DestConfig, DestKey, Forward, GueChecksum, IfName, Op, Persistence, Protocol,
    Scheduler, ServiceConfig, ServiceFlags, ServiceKey, SyncDaemon, SyncRole, Thresholds, Tunnel,
    Weight,
};

/// A netlink attribute laid out by hand: `u16 len` (header + value), `u16
/// type`, value, zero padding to 4 bytes. Independent of the code under test.
fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut out = Vec::new();
    out.extend_from_slice(&(len as u16).to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(value);
    out.resize(len.div_ceil(4) * 4, 0);
    out
}

fn concat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

fn emit(msg: &IpvsMessage) -> Vec<u8> {
    let mut out = vec![0; msg.buffer_len()];
    msg.emit(&mut out);
    out
}

fn parse(cmd: u8, bytes: &[u8]) -> IpvsMessage {
    IpvsMessage::parse_with_param(bytes, GenlHeader { cmd, version: 1 }).unwrap()
}

fn vip() -> ServiceKey {
    ServiceKey::Addr {
        address: "192.0.2.10".parse().unwrap(),
        protocol: Protocol::Tcp,
        port: 80,
    }
}

fn real_server() -> DestKey {
    DestKey {
        address: "198.51.100.11".parse().unwrap(),
        port: 80,
    }
}

/// The whole datagram of `ipvsadm -A -t 192.0.2.10:80 -s wrr`, family id 0x1c.
#[test]
fn new_service_request_bytes() {
    let op = Op::NewService {
        key: vip(),
        config: ServiceConfig::new(Scheduler::WRR),
    };
    let mut genl = GenlMessage::from_payload(convert::op_message(&op));
    genl.set_resolved_family_id(0x1c);
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    header.sequence_number = 1;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(genl));
    msg.finalize();
    let mut out = vec![0; msg.buffer_len()];
    msg.serialize(&mut out);

    #[rustfmt::skip]
    let expected: Vec<u8> = vec![
        // nlmsghdr: len 104, type 0x1c (IPVS), flags REQUEST|ACK, seq 1, pid 0
        0x68, 0, 0, 0,  0x1c, 0,  0x05, 0,  1, 0, 0, 0,  0, 0, 0, 0,
        // genlmsghdr: cmd IPVS_CMD_NEW_SERVICE, version 1, reserved
        1, 1, 0, 0,
        // IPVS_CMD_ATTR_SERVICE, len 84
        84, 0, 1, 0,
        //   IPVS_SVC_ATTR_AF = AF_INET (u16) + pad
        6, 0, 1, 0,  2, 0, 0, 0,
        //   IPVS_SVC_ATTR_PROTOCOL = 6 (u16) + pad
        6, 0, 2, 0,  6, 0, 0, 0,
        //   IPVS_SVC_ATTR_ADDR = union nf_inet_addr (16 bytes)
        20, 0, 3, 0,  192, 0, 2, 10,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,
        //   IPVS_SVC_ATTR_PORT = 80, big-endian + pad
        6, 0, 4, 0,  0, 80, 0, 0,
        //   IPVS_SVC_ATTR_SCHED_NAME = "wrr\0"
        8, 0, 6, 0,  b'w', b'r', b'r', 0,
        //   IPVS_SVC_ATTR_FLAGS = {flags 0, mask ~0}
        12, 0, 7, 0,  0, 0, 0, 0,  0xff, 0xff, 0xff, 0xff,
        //   IPVS_SVC_ATTR_TIMEOUT = 0
        8, 0, 8, 0,  0, 0, 0, 0,
        //   IPVS_SVC_ATTR_NETMASK = 255.255.255.255 (__be32)
        8, 0, 9, 0,  0xff, 0xff, 0xff, 0xff,
    ];
    assert_eq!(out, expected);

    // And back: the datagram parses into the same message.
    let parsed = NetlinkMessage::<GenlMessage<IpvsMessage>>::deserialize(&expected).unwrap();
    match parsed.payload {
        NetlinkPayload::InnerMessage(genl) => {
            assert_eq!(genl.payload, convert::op_message(&op));
            assert_eq!(genl.family_id(), 0x1c);
        }
        other => panic!("unexpected payload {other:?}"),
    }
}

/// `ipvsadm -a -t 192.0.2.10:80 -r 198.51.100.11:80 -i -w 3 --tun-type gue
/// --tun-port 6080 --tun-csum`: the genl payload.
#[test]
fn new_dest_gue_request_bytes() {
    let op = Op::NewDest {
        service: vip(),
        dest: real_server(),
        config: DestConfig {
            weight: Weight::new(3).unwrap(),
            forward: Forward::Tunnel(Tunnel::Gue {
                port: NonZeroU16::new(6080).unwrap(),
                checksum: GueChecksum::Csum,
            }),
            thresholds: Thresholds::default(),
        },
    };
    let msg = convert::op_message(&op);
    assert_eq!(msg.cmd, IpvsCmd::NewDest);

    #[rustfmt::skip]
    let expected: Vec<u8> = vec![
        // IPVS_CMD_ATTR_SERVICE (identity only), len 48
        48, 0, 1, 0,
        6, 0, 1, 0,  2, 0, 0, 0,
        6, 0, 2, 0,  6, 0, 0, 0,
        20, 0, 3, 0,  192, 0, 2, 10,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,
        6, 0, 4, 0,  0, 80, 0, 0,
        // IPVS_CMD_ATTR_DEST, len 96
        96, 0, 2, 0,
        //   IPVS_DEST_ATTR_ADDR
        20, 0, 1, 0,  198, 51, 100, 11,  0, 0, 0, 0,  0, 0, 0, 0,  0, 0, 0, 0,
        //   IPVS_DEST_ATTR_PORT = 80 (be16)
        6, 0, 2, 0,  0, 80, 0, 0,
        //   IPVS_DEST_ATTR_ADDR_FAMILY = AF_INET
        6, 0, 11, 0,  2, 0, 0, 0,
        //   IPVS_DEST_ATTR_FWD_METHOD = IP_VS_CONN_F_TUNNEL
        8, 0, 3, 0,  2, 0, 0, 0,
        //   IPVS_DEST_ATTR_WEIGHT = 3
        8, 0, 4, 0,  3, 0, 0, 0,
        //   IPVS_DEST_ATTR_U_THRESH, L_THRESH = 0
        8, 0, 5, 0,  0, 0, 0, 0,
        8, 0, 6, 0,  0, 0, 0, 0,
        //   IPVS_DEST_ATTR_TUN_TYPE = GUE (u8) + pad
        5, 0, 13, 0,  1, 0, 0, 0,
        //   IPVS_DEST_ATTR_TUN_PORT = 6080 (be16) + pad
        6, 0, 14, 0,  0x17, 0xc0, 0, 0,
        //   IPVS_DEST_ATTR_TUN_FLAGS = CSUM (u16) + pad
        6, 0, 15, 0,  1, 0, 0, 0,
    ];
    assert_eq!(emit(&msg), expected);
    assert_eq!(parse(5, &expected), msg);
}

/// `ipvsadm -d`: identity attributes only.
#[test]
fn del_dest_request_bytes() {
    let msg = convert::op_message(&Op::DelDest {
        service: vip(),
        dest: real_server(),
    });
    let bytes = emit(&msg);
    let dest_nest = concat(&[
        nla(1, &[198, 51, 100, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        nla(2, &80u16.to_be_bytes()),
        nla(11, &2u16.to_le_bytes()),
    ]);
    assert_eq!(&bytes[48..], &nla(2, &dest_nest)[..]);
    assert_eq!(msg.cmd, IpvsCmd::DelDest);
}

/// `ipvsadm --start-daemon master --mcast-interface eth0 --syncid 5`.
#[test]
fn start_daemon_request_bytes() {
    let daemon = SyncDaemon::new(SyncRole::Master, IfName::new("eth0").unwrap(), 5);
    let msg = convert::start_daemon_message(&daemon);
    #[rustfmt::skip]
    let expected: Vec<u8> = vec![
        // IPVS_CMD_ATTR_DAEMON, len 32
        32, 0, 3, 0,
        //   IPVS_DAEMON_ATTR_STATE = IP_VS_STATE_MASTER
        8, 0, 1, 0,  1, 0, 0, 0,
        //   IPVS_DAEMON_ATTR_MCAST_IFN = "eth0\0" + pad
        9, 0, 2, 0,  b'e', b't', b'h', b'0',  0, 0, 0, 0,
        //   IPVS_DAEMON_ATTR_SYNC_ID = 5
        8, 0, 3, 0,  5, 0, 0, 0,
    ];
    assert_eq!(emit(&msg), expected);
    assert_eq!(msg.cmd, IpvsCmd::NewDaemon);
    let stop = convert::stop_daemon_message(SyncRole::Backup);
    assert_eq!(emit(&stop), concat(&[nla(3, &nla(1, &2u32.to_le_bytes()))]));
}

fn stats32() -> Vec<u8> {
    concat(&[
        nla(1, &7u32.to_le_bytes()),    // conns
        nla(2, &70u32.to_le_bytes()),   // inpkts
        nla(3, &0u32.to_le_bytes()),    // outpkts
        nla(4, &7000u64.to_le_bytes()), // inbytes (u64)
        nla(5, &0u64.to_le_bytes()),    // outbytes (u64)
        nla(6, &1u32.to_le_bytes()),    // cps
        nla(7, &2u32.to_le_bytes()),    // inpps
        nla(8, &0u32.to_le_bytes()),    // outpps
        nla(9, &300u32.to_le_bytes()),  // inbps
        nla(10, &0u32.to_le_bytes()),   // outbps
    ])
}

fn stats64() -> Vec<u8> {
    let values: [u64; 10] = [7, 70, 0, 7000, 0, 1, 2, 0, 300, 0];
    values
        .iter()
        .enumerate()
        .flat_map(|(i, v)| nla(i as u16 + 1, &v.to_le_bytes()))
        .collect()
}

/// A service dump reply as `ip_vs_genl_fill_service` lays it out: mh with
/// the mh-port flag, persistent 300 s with mask 255.255.255.0, HASHED set.
#[test]
fn service_dump_reply_parses_and_round_trips() {
    let flags = 0x0001u32 | 0x0002 | 0x0010; // PERSISTENT | HASHED | SCHED2
    let service = concat(&[
        nla(1, &2u16.to_le_bytes()),
        nla(2, &6u16.to_le_bytes()),
        nla(3, &[192, 0, 2, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        nla(4, &443u16.to_be_bytes()),
        nla(6, b"mh\0"),
        nla(7, &[flags.to_le_bytes(), u32::MAX.to_le_bytes()].concat()),
        nla(8, &300u32.to_le_bytes()),
        nla(9, &[255, 255, 255, 0]),
        nla(10, &stats32()),
        nla(12, &stats64()),
    ]);
    let bytes = nla(1, &service);
    let msg = parse(1, &bytes);
    assert_eq!(msg.cmd, IpvsCmd::NewService);
    assert_eq!(emit(&msg), bytes, "parsed reply emits back byte for byte");

    let parsed = convert::parse_service(convert::service_nest(&msg).unwrap()).unwrap();
    assert_eq!(
        parsed.key,
        ServiceKey::Addr {
            address: "192.0.2.10".parse().unwrap(),
            protocol: Protocol::Tcp,
            port: 443,
        }
    );
    assert_eq!(parsed.config.scheduler, Scheduler::MH);
    assert_eq!(parsed.config.flags, ServiceFlags::SCHED2);
    assert_eq!(
        parsed.config.persistence,
        Some(Persistence::new(AddressFamily::Inet, 300, 24).unwrap())
    );
    assert_eq!(parsed.stats.conns, 7);
    assert_eq!(parsed.stats.in_bytes, 7000);
    assert_eq!(parsed.stats.in_bps, 300);
}

/// A destination dump reply as `ip_vs_genl_fill_dest` lays it out.
#[test]
fn dest_dump_reply_parses_and_round_trips() {
    let dest = concat(&[
        nla(1, &[198, 51, 100, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        nla(2, &8080u16.to_be_bytes()),
        nla(3, &2u32.to_le_bytes()),   // FWD_METHOD = tunnel
        nla(4, &5u32.to_le_bytes()),   // WEIGHT
        nla(13, &[2]),                 // TUN_TYPE = GRE (u8)
        nla(14, &0u16.to_be_bytes()),  // TUN_PORT
        nla(15, &1u16.to_le_bytes()),  // TUN_FLAGS = CSUM
        nla(5, &100u32.to_le_bytes()), // U_THRESH
        nla(6, &10u32.to_le_bytes()),  // L_THRESH
        nla(7, &3u32.to_le_bytes()),   // ACTIVE_CONNS
        nla(8, &4u32.to_le_bytes()),   // INACT_CONNS
        nla(9, &0u32.to_le_bytes()),   // PERSIST_CONNS
        nla(11, &2u16.to_le_bytes()),  // ADDR_FAMILY
        nla(10, &stats32()),
        nla(12, &stats64()),
    ]);
    let bytes = nla(2, &dest);
    let msg = parse(5, &bytes);
    assert_eq!(emit(&msg), bytes, "parsed reply emits back byte for byte");

    let parsed =
        convert::parse_dest(convert::dest_nest(&msg).unwrap(), AddressFamily::Inet).unwrap();
    assert_eq!(
        parsed.key,
        DestKey {
            address: "198.51.100.12".parse().unwrap(),
            port: 8080,
        }
    );
    assert_eq!(parsed.config.weight, Weight::new(5).unwrap());
    assert_eq!(
        parsed.config.forward,
        Forward::Tunnel(Tunnel::Gre { checksum: true })
    );
    assert_eq!(parsed.config.thresholds, Thresholds::new(100, 10).unwrap());
    assert_eq!((parsed.conns.active, parsed.conns.inactive), (3, 4));
    assert_eq!(parsed.stats.in_packets, 70);
}

/// A route-mode destination reports tunnel fields as zero; they are ignored.
#[test]
fn non_tunnel_dest_ignores_tunnel_fields() {
    let attrs = vec![
        DestAttr::Address(super::message::InetAddr::from_ip(
            "198.51.100.13".parse().unwrap(),
        )),
        DestAttr::Port(80),
        DestAttr::FwdMethod(3),
        DestAttr::Weight(1),
        DestAttr::TunType(0),
        DestAttr::TunPort(0),
        DestAttr::TunFlags(0),
    ];
    let parsed = convert::parse_dest(&attrs, AddressFamily::Inet).unwrap();
    assert_eq!(parsed.config.forward, Forward::Route);
}

/// A daemon dump reply as `ip_vs_genl_fill_daemon` lays it out.
#[test]
fn daemon_dump_reply_parses() {
    let daemon = concat(&[
        nla(1, &2u32.to_le_bytes()),
        nla(2, b"lb-sync\0"),
        nla(3, &9u32.to_le_bytes()),
        nla(4, &1472u16.to_le_bytes()),
        nla(7, &8848u16.to_le_bytes()),
        nla(8, &[1]),
        nla(5, &[224, 0, 0, 81]),
    ]);
    let bytes = nla(3, &daemon);
    let msg = parse(9, &bytes);
    assert_eq!(emit(&msg), bytes);
    let parsed = convert::parse_daemon(convert::daemon_nest(&msg).unwrap()).unwrap();
    assert_eq!(parsed.role, SyncRole::Backup);
    assert_eq!(parsed.ifname.as_str(), "lb-sync");
    assert_eq!(parsed.sync_id, 9);
    assert_eq!(parsed.max_len, Some(1472));
    assert_eq!(parsed.port, Some(8848));
    assert_eq!(parsed.ttl, Some(1));
    assert_eq!(parsed.group, Some("224.0.0.81".parse().unwrap()));
}

/// Unknown nested attributes (a newer kernel) are kept and emitted back.
#[test]
fn unknown_nested_attributes_survive() {
    let service = concat(&[
        nla(1, &2u16.to_le_bytes()),
        nla(5, &42u32.to_le_bytes()),
        nla(6, b"rr\0"),
        nla(200, &[9, 9, 9]),
    ]);
    let bytes = nla(1, &service);
    let msg = parse(1, &bytes);
    let attrs = convert::service_nest(&msg).unwrap();
    assert!(
        matches!(attrs.last(), Some(ServiceAttr::Other(o)) if netlink_packet_core::Nla::kind(o) == 200)
    );
    assert_eq!(emit(&msg), bytes);
    let parsed = convert::parse_service(attrs).unwrap();
    assert_eq!(
        parsed.key,
        ServiceKey::Fwmark {
            family: AddressFamily::Inet,
            mark: 42,
        }
    );
}

/// A malformed known attribute is an error, not a silent default.
#[test]
fn malformed_known_attribute_fails() {
    let bytes = nla(1, &nla(1, &[2, 0, 0])); // AF with 3 bytes
    assert!(IpvsMessage::parse_with_param(&bytes, GenlHeader { cmd: 1, version: 1 }).is_err());
}

/// Model -> attributes -> model, for IPv4, IPv6 and firewall-mark services.
#[test]
fn service_model_round_trips() {
    let v6: IpAddr = "2001:db8::10".parse().unwrap();
    let cases = [
        (vip(), ServiceConfig::new(Scheduler::RR)),
        (
            ServiceKey::Addr {
                address: v6,
                protocol: Protocol::Udp,
                port: 53,
            },
            ServiceConfig {
                scheduler: Scheduler::new("sh").unwrap(),
                flags: ServiceFlags::SCHED1.union(ServiceFlags::SCHED2),
                persistence: Some(Persistence::new(AddressFamily::Inet6, 60, 64).unwrap()),
            },
        ),
        (
            ServiceKey::Fwmark {
                family: AddressFamily::Inet,
                mark: 1,
            },
            ServiceConfig {
                scheduler: Scheduler::MH,
                flags: ServiceFlags::ONE_PACKET,
                persistence: None,
            },
        ),
    ];
    for (key, config) in cases {
        let msg = IpvsMessage::new(
            IpvsCmd::NewService,
            vec![IpvsAttr::Service(convert::service_attrs(&key, &config))],
        );
        let back = parse(1, &emit(&msg));
        let parsed = convert::parse_service(convert::service_nest(&back).unwrap()).unwrap();
        assert_eq!((parsed.key, parsed.config), (key, config));
    }
    // IPv6 netmask travels as the host-order prefix length.
    let attrs = convert::service_attrs(
        &ServiceKey::Addr {
            address: v6,
            protocol: Protocol::Tcp,
            port: 80,
        },
        &ServiceConfig::new(Scheduler::RR),
    );
    assert!(attrs.contains(&ServiceAttr::Netmask(128u32.to_le_bytes())));
    assert!(attrs.contains(&ServiceAttr::AddressFamily(10)));
}

/// Model -> attributes -> model for every kind of destination.
#[test]
fn dest_model_round_trips() {
    let w = Weight::new(2).unwrap();
    let forwards = [
        Forward::Masq,
        Forward::Route,
        Forward::Tunnel(Tunnel::Ipip),
        Forward::Tunnel(Tunnel::Gre { checksum: false }),
        Forward::Tunnel(Tunnel::Gue {
            port: NonZeroU16::new(5555).unwrap(),
            checksum: GueChecksum::Remote,
        }),
    ];
    for forward in forwards {
        let config = DestConfig {
            weight: w,
            forward,
            thresholds: Thresholds::new(50, 5).unwrap(),
        };
        let attrs = convert::dest_attrs(&real_server(), &config);
        let parsed = convert::parse_dest(&attrs, AddressFamily::Inet).unwrap();
        assert_eq!((parsed.key, parsed.config), (real_server(), config));
    }
    // An IPv6 real server behind an IPv4 service (mixed-family tunnel).
    let v6 = DestKey {
        address: "2001:db8::11".parse().unwrap(),
        port: 80,
    };
    let attrs = convert::dest_attrs(&v6, &DestConfig::tunnel(w));
    let parsed = convert::parse_dest(&attrs, AddressFamily::Inet).unwrap();
    assert_eq!(parsed.key, v6);
}
