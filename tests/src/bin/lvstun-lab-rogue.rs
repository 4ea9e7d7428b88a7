//! `lvstun-lab-rogue`: a rogue host on the lab's front segment, for the VRRP source allowlist's
//! lab test (`tests/lab/scenarios/balancer-vrrp-rogue.sh`). It sends well-formed VRRPv3
//! advertisements (the product's own codec, `lvstun_vrrp::packet`) for a VRID and its VIPs,
//! at a priority that would win the election, from its own address to 224.0.0.18 with TTL 255:
//! exactly what a Backup that hears every sender would obey.
//!
//! ```text
//! lvstun-lab-rogue --interface eth0 --vrid 51 --vip 192.0.2.100 [--priority 254]
//!                  [--interval-ms 100] [--count 30]
//! ```
//!
//! Bounded: at most `--count` (1..=100) advertisements, `--interval-ms` (10..=1000) apart, so
//! at most 100 s; it only ever sends to the VRRP group on the one interface it is given, and it
//! is meant to run only in a namespace of the lab VM. Prints `sent=N` and `source=IP` at the end.
//! Needs CAP_NET_RAW.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lvstun_vrrp::packet::{Advertisement, IPPROTO_VRRP, VRRP_MULTICAST_V4, VRRP_TTL};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

struct Args {
    interface: String,
    vrid: u8,
    vips: Vec<Ipv4Addr>,
    priority: u8,
    interval: Duration,
    count: u32,
}

fn parse_args() -> Result<Args> {
    let mut interface = None;
    let mut vrid = None;
    let mut vips = Vec::new();
    let mut priority = 254u8;
    let mut interval_ms = 100u64;
    let mut count = 30u32;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--interface" => interface = Some(value()?),
            "--vrid" => vrid = Some(value()?.parse::<u8>().context("--vrid")?),
            "--vip" => vips.push(value()?.parse::<Ipv4Addr>().context("--vip")?),
            "--priority" => priority = value()?.parse().context("--priority")?,
            "--interval-ms" => interval_ms = value()?.parse().context("--interval-ms")?,
            "--count" => count = value()?.parse().context("--count")?,
            other => bail!("unknown flag {other}"),
        }
    }
    if !(10..=1000).contains(&interval_ms) {
        bail!("--interval-ms must be 10..=1000");
    }
    if !(1..=100).contains(&count) {
        bail!("--count must be 1..=100");
    }
    if vips.is_empty() {
        bail!("at least one --vip is needed");
    }
    Ok(Args {
        interface: interface.context("--interface is needed")?,
        vrid: vrid.context("--vrid is needed")?,
        vips,
        priority,
        interval: Duration::from_millis(interval_ms),
        count,
    })
}

/// The interface's first IPv4 address, from `ip -4 -o addr show dev IFACE` (the lab has `ip`;
/// this keeps the binary free of netlink code).
fn source_address(interface: &str) -> Result<Ipv4Addr> {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", interface])
        .output()
        .context("run ip")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("no IPv4 address on {interface}: {text}"))
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let source = source_address(&args.interface)?;
    let advert = Advertisement::new(
        args.vrid,
        args.priority,
        u16::try_from(args.interval.as_millis() / 10).unwrap_or(u16::MAX),
        args.vips.clone(),
    )
    .map_err(|e| anyhow::anyhow!("advertisement: {e}"))?;
    let bytes = advert.encode(source, VRRP_MULTICAST_V4);
    let socket = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(i32::from(IPPROTO_VRRP))),
    )?;
    socket.bind_device(Some(args.interface.as_bytes()))?;
    socket.bind(&SockAddr::from(SocketAddrV4::new(source, 0)))?;
    socket.set_multicast_if_v4(&source)?;
    socket.set_multicast_ttl_v4(u32::from(VRRP_TTL))?;
    socket.set_ttl_v4(u32::from(VRRP_TTL))?;
    let to = SockAddr::from(SocketAddrV4::new(VRRP_MULTICAST_V4, 0));
    let start = Instant::now();
    let mut sent = 0u32;
    for i in 0..args.count {
        let due = start + args.interval * i;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        socket.send_to(&bytes, &to).context("send")?;
        sent += 1;
    }
    println!("sent={sent}");
    println!("source={source}");
    Ok(())
}
