//! Where a daemon's local HTTP endpoint (`--health-port`, `--health-address`) listens: one rule
//! for both roles. Pure.
//!
//! Why several addresses: in a cluster the operator passes loopback, which the kubelet's probes
//! use (they keep working while the node's data link is down), and the node's own address
//! (from the downward API), which a metrics scraper reaches. Never `0.0.0.0` there: with host
//! networking that includes every VIP the node holds, so the endpoint would answer on the
//! public address. Standalone hosts keep the old single default.

use std::net::{IpAddr, SocketAddr};

/// The sockets to listen on: one per `addresses` entry (repeats dropped, order kept), or
/// `default` alone when none is given; nothing without a port.
pub fn listen_on(
    port: Option<u16>,
    addresses: &[IpAddr],
    default: impl Into<IpAddr>,
) -> Vec<SocketAddr> {
    let Some(port) = port else {
        return Vec::new();
    };
    let mut out: Vec<SocketAddr> = Vec::new();
    let default = [default.into()];
    let chosen = if addresses.is_empty() {
        &default[..]
    } else {
        addresses
    };
    for ip in chosen {
        let addr = SocketAddr::new(*ip, port);
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn each_address_gets_a_socket_and_none_falls_back_to_the_default() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let sock = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let cases: [(Option<u16>, Vec<IpAddr>, Vec<SocketAddr>); 4] = [
            (None, vec![ip("127.0.0.1")], vec![]),
            (Some(9781), vec![], vec![sock("0.0.0.0:9781")]),
            (
                Some(9781),
                vec![ip("127.0.0.1"), ip("192.0.2.11")],
                vec![sock("127.0.0.1:9781"), sock("192.0.2.11:9781")],
            ),
            (
                Some(9781),
                vec![ip("127.0.0.1"), ip("127.0.0.1")],
                vec![sock("127.0.0.1:9781")],
            ),
        ];
        for (port, addresses, want) in cases {
            assert_eq!(
                listen_on(port, &addresses, Ipv4Addr::UNSPECIFIED),
                want,
                "{port:?} {addresses:?}"
            );
        }
    }
}
