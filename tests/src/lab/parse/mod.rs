//! Pure parsers for what lab scenarios record: the raw output of the witness tools.
//!
//! Scenarios save tools' output as they printed it (`ipvsadm -Ln --stats --exact`, `curl -i`,
//! `ip -j ...`) and the Rust tests parse it here, so that assertions stand on real output and
//! the parsing itself is unit-tested against captured samples. No I/O in this module.
//!
//! One submodule per artefact that has grown a typed model: [`ipvsadm`] (the table and the
//! sync daemons), [`prom`] (`/metrics`), [`ip`] (addresses), [`nft`] (rules), [`log`] (the
//! daemons' log lines and VRRP transitions). Smaller outputs are parsed here.

pub mod ip;
pub mod ipvsadm;
pub mod log;
pub mod nft;
pub mod prom;

use std::collections::BTreeMap;

/// Parses `KEY=VALUE` lines (results.txt, timing.env, setup.sh's stdout).
///
/// A key may repeat: its values are kept in order. Blank lines, `#` comments and lines
/// without `=` are skipped.
pub fn key_values(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            map.entry(key.trim().to_string())
                .or_default()
                .push(value.to_string());
        }
    }
    map
}

/// The five counters `ipvsadm --stats` prints for a service or a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IpvsCounters {
    /// Connections scheduled.
    pub conns: u64,
    /// Packets from clients (in).
    pub in_pkts: u64,
    /// Packets to clients through the balancer (out): 0 under direct server return.
    pub out_pkts: u64,
    /// Bytes in.
    pub in_bytes: u64,
    /// Bytes out.
    pub out_bytes: u64,
}

/// One destination (real server) of an IPVS service, with its counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsDestStats {
    /// `address:port` as ipvsadm prints it.
    pub address: String,
    /// Its counters.
    pub counters: IpvsCounters,
}

/// One IPVS virtual service, with its counters and destinations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsServiceStats {
    /// `TCP`, `UDP`, `SCTP` or `FWM`.
    pub protocol: String,
    /// `address:port` (or the firewall mark for `FWM`).
    pub address: String,
    /// The service's counters.
    pub counters: IpvsCounters,
    /// Its destinations, in ipvsadm's order.
    pub destinations: Vec<IpvsDestStats>,
}

/// Parses `ipvsadm -Ln --stats --exact` (use `--exact`: without it large numbers get K/M
/// suffixes, which this parser refuses rather than guesses).
pub fn ipvs_stats(text: &str) -> Result<Vec<IpvsServiceStats>, String> {
    let mut services: Vec<IpvsServiceStats> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [proto, addr, rest @ ..] if ["TCP", "UDP", "SCTP", "FWM"].contains(proto) => {
                services.push(IpvsServiceStats {
                    protocol: (*proto).to_string(),
                    address: (*addr).to_string(),
                    counters: counters(rest).map_err(|e| format!("line {}: {e}", n + 1))?,
                    destinations: Vec::new(),
                });
            }
            ["->", addr, rest @ ..] if rest.len() == 5 => {
                let counters = counters(rest).map_err(|e| format!("line {}: {e}", n + 1))?;
                let service = services
                    .last_mut()
                    .ok_or_else(|| format!("line {}: destination before any service", n + 1))?;
                service.destinations.push(IpvsDestStats {
                    address: (*addr).to_string(),
                    counters,
                });
            }
            _ => {} // banner, column headers, blank lines
        }
    }
    Ok(services)
}

fn counters(fields: &[&str]) -> Result<IpvsCounters, String> {
    let [conns, in_pkts, out_pkts, in_bytes, out_bytes] = fields else {
        return Err(format!("expected 5 counters, got {fields:?}"));
    };
    let num = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| format!("counter {s:?} is not a plain number (was --exact used?)"))
    };
    Ok(IpvsCounters {
        conns: num(conns)?,
        in_pkts: num(in_pkts)?,
        out_pkts: num(out_pkts)?,
        in_bytes: num(in_bytes)?,
        out_bytes: num(out_bytes)?,
    })
}

/// One HTTP response head as `curl -i` printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
}

impl HttpResponse {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the response heads out of `curl -i` output for one or many transfers.
///
/// A head starts at a line `HTTP/x y ...` at the start of a line and ends at the first blank
/// line; bodies and `-w` lines in between are skipped. Interim `1xx` heads are dropped, so one
/// element per transfer remains.
pub fn http_responses(text: &str) -> Result<Vec<HttpResponse>, String> {
    let mut out = Vec::new();
    let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
    while let Some(line) = lines.next() {
        if !line.starts_with("HTTP/") {
            continue;
        }
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        let mut headers = Vec::new();
        for header in lines.by_ref() {
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        if !(100..200).contains(&status) {
            out.push(HttpResponse { status, headers });
        }
    }
    Ok(out)
}

/// Parses the `curl: key=value ...` lines a scenario's `-w` format printed, one per transfer.
pub fn curl_write_outs(text: &str) -> Vec<BTreeMap<String, String>> {
    text.lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("curl: "))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// The link-layer address `ip -j neigh show` reports for `ip`, if there is an entry with one.
pub fn neighbour_lladdr(neigh: &serde_json::Value, ip: &str) -> Option<String> {
    neigh.as_array()?.iter().find_map(|entry| {
        if entry.get("dst")?.as_str()? == ip {
            Some(entry.get("lladdr")?.as_str()?.to_string())
        } else {
            None
        }
    })
}

/// The MAC of the (single) link in `ip -j link show dev X` output.
pub fn link_address(link: &serde_json::Value) -> Option<String> {
    Some(
        link.as_array()?
            .first()?
            .get("address")?
            .as_str()?
            .to_string(),
    )
}

/// One line of `ipvsadm -Lnc` (the connection table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsConn {
    /// `TCP` or `UDP`.
    pub protocol: String,
    /// Time left, as printed (`mm:ss`).
    pub expire: String,
    /// IPVS state, e.g. `ESTABLISHED`, `FIN_WAIT`.
    pub state: String,
    /// Client `address:port`.
    pub source: String,
    /// VIP `address:port`.
    pub virtual_addr: String,
    /// Real server `address:port`.
    pub destination: String,
}

impl IpvsConn {
    /// The client's port.
    pub fn source_port(&self) -> Option<u16> {
        self.source.rsplit_once(':')?.1.parse().ok()
    }
}

/// Parses `ipvsadm -Lnc`: the header lines are skipped, every other line must have the six
/// columns.
pub fn ipvs_conns(text: &str) -> Result<Vec<IpvsConn>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() || line.starts_with("IPVS connection entries") || f[0] == "pro" {
            continue;
        }
        let [protocol, expire, state, source, virtual_addr, destination] = f[..] else {
            return Err(format!("line {}: expected 6 columns: {line:?}", n + 1));
        };
        out.push(IpvsConn {
            protocol: protocol.to_owned(),
            expire: expire.to_owned(),
            state: state.to_owned(),
            source: source.to_owned(),
            virtual_addr: virtual_addr.to_owned(),
            destination: destination.to_owned(),
        });
    }
    Ok(out)
}

/// One request of a `lvstun-lab-load` stamp file (`# seq send_ms status node latency_ms
/// error [source]`).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadStamp {
    /// The request's number.
    pub seq: u64,
    /// When it was sent, in ms since the load started.
    pub send_ms: f64,
    /// The HTTP status; 0 when the request failed before one (see `error`).
    pub status: u16,
    /// The `Node` header of the answer (`-` for none).
    pub node: String,
    /// What went wrong (`-` for nothing), e.g. `connect:timedout`.
    pub error: String,
}

impl LoadStamp {
    /// Whether the request was answered 200.
    pub fn ok(&self) -> bool {
        self.status == 200
    }
}

/// Parses a load stamp file: `#` lines are comments, every other line must have at least the
/// six columns.
pub fn load_stamps(text: &str) -> Result<Vec<LoadStamp>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let at = |e: &str| format!("line {}: {e}: {line:?}", n + 1);
        let f: Vec<&str> = line.split_whitespace().collect();
        let [seq, send_ms, status, node, _latency, error, ..] = f[..] else {
            return Err(at("expected 6 columns"));
        };
        out.push(LoadStamp {
            seq: seq.parse().map_err(|_| at("seq"))?,
            send_ms: send_ms.parse().map_err(|_| at("send_ms"))?,
            status: status.parse().map_err(|_| at("status"))?,
            node: node.to_owned(),
            error: error.to_owned(),
        });
    }
    Ok(out)
}

/// The count of an `ops: N` line, as `lvstun-node ipvs apply` prints it first (the
/// operations it sent), if `text`'s first line is one.
pub fn applied_ops(text: &str) -> Option<u64> {
    text.lines()
        .next()?
        .trim()
        .strip_prefix("ops: ")?
        .parse()
        .ok()
}

/// A scenario check's verdict recorded as `NAME=ok DETAIL` or `NAME=FAIL DETAIL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the scenario's check passed.
    pub ok: bool,
    /// What it said about it.
    pub detail: String,
}

/// Reads a verdict; anything but `ok ...`/`FAIL ...` is not one.
pub fn verdict(value: &str) -> Option<Verdict> {
    let (word, detail) = value.split_once(' ').unwrap_or((value, ""));
    let ok = match word {
        "ok" => true,
        "FAIL" => false,
        _ => return None,
    };
    Some(Verdict {
        ok,
        detail: detail.to_owned(),
    })
}

/// A condition as `lvstun-node web apply`/`check` print it: `TYPE=STATUS reason=REASON
/// message=MESSAGE`, the message last and running to the end of the line (it may hold `=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// The condition's type, e.g. `TunnelReady`.
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Its reason.
    pub reason: String,
    /// Its message.
    pub message: String,
}

/// Reads one condition line; a line in another shape is `None`.
pub fn condition(line: &str) -> Option<Condition> {
    let (head, message) = line.trim().split_once(" message=")?;
    let (kind_status, reason) = head.split_once(" reason=")?;
    let (kind, status) = kind_status.split_once('=')?;
    Some(Condition {
        kind: kind.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
    })
}

/// What `arping` printed: the link-layer addresses that answered (lower case) and its
/// `Received N response(s)` count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arping {
    /// The MAC of each `Unicast reply from IP [MAC]` line.
    pub replies: Vec<String>,
    /// The count of its summary line.
    pub received: u32,
}

/// Parses iputils' `arping` output; without its summary line it is an error.
pub fn arping(text: &str) -> Result<Arping, String> {
    let replies = text
        .lines()
        .filter(|l| l.starts_with("Unicast reply from "))
        .filter_map(|l| Some(l.split_once('[')?.1.split_once(']')?.0.to_lowercase()))
        .collect();
    let received = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("Received ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .ok_or("no `Received N response(s)` line")?;
    Ok(Arping { replies, received })
}

/// What a daemon's `/readyz` page says: its first line `ready: SUMMARY` (or `not ready:
/// SUMMARY`), then any `refused: ...` lines (operations the kernel refused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readyz {
    /// Whether it said ready.
    pub ready: bool,
    /// The rest of the first line.
    pub summary: String,
    /// Each `refused:` line's text.
    pub refused: Vec<String>,
}

/// Parses a `/readyz` body (the lab's `curl -w` lines after it, `curl: ...`, are ignored).
pub fn readyz(text: &str) -> Result<Readyz, String> {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let (ready, summary) = if let Some(s) = first.strip_prefix("ready: ") {
        (true, s)
    } else if let Some(s) = first.strip_prefix("not ready: ") {
        (false, s)
    } else {
        return Err(format!("not a /readyz body: {first:?}"));
    };
    Ok(Readyz {
        ready,
        summary: summary.to_owned(),
        refused: lines
            .filter_map(|l| l.strip_prefix("refused: "))
            .map(str::to_owned)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_message_runs_to_the_end_of_the_line() {
        // web-daemon's `web2-apply2.txt`.
        let c = condition("TunnelReady=True reason=Ready message=tunl0 up; 192.0.2.100 on lvstun0; MSS clamped to 1440 (rp_filter on tunl0: all=0 tunl0=0)").unwrap();
        assert_eq!(
            (c.kind.as_str(), c.status.as_str(), c.reason.as_str()),
            ("TunnelReady", "True", "Ready")
        );
        assert!(c.message.ends_with("(rp_filter on tunl0: all=0 tunl0=0)"));
        assert_eq!(condition("writes: 0"), None);
    }

    #[test]
    fn arping_reads_replies_and_the_count() {
        // web-daemon's `arping-client.txt` and `arping-web1.txt`.
        let a = arping("ARPING 192.0.2.100 from 192.0.2.10 eth0\nUnicast reply from 192.0.2.100 [02:00:00:02:00:0B]  2.373ms\nUnicast reply from 192.0.2.100 [02:00:00:02:00:0B]  1.068ms\nSent 2 probes (1 broadcast(s))\nReceived 2 response(s)\n").unwrap();
        assert_eq!(a.received, 2);
        assert_eq!(a.replies, ["02:00:00:02:00:0b"; 2]);
        let a = arping("ARPING 192.0.2.100 from 198.51.100.1 eth1\nSent 3 probes (3 broadcast(s))\nReceived 0 response(s)\n").unwrap();
        assert_eq!((a.received, a.replies.len()), (0, 0));
        assert!(arping("arping: socket: Operation not permitted\n").is_err());
    }

    #[test]
    fn load_stamps_read_each_request() {
        // balancer-vrrp's `load.txt`: answered, then failed during the crash.
        let s = load_stamps(
            "# seq send_ms status node latency_ms error [source]\n\
             0 16.571 200 www2 44.121 -\n\
             703 4846.291 0 - 101.885 connect:timedout\n",
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        assert!(s[0].ok());
        assert_eq!((s[0].seq, s[0].node.as_str()), (0, "www2"));
        assert_eq!(s[1].send_ms, 4846.291);
        assert!(!s[1].ok());
        assert_eq!(s[1].error, "connect:timedout");
        assert!(load_stamps("1 2 3\n").is_err());
    }

    #[test]
    fn applied_ops_and_verdicts() {
        assert_eq!(
            applied_ops("ops: 60\n  add service TCP 192.0.2.100:20000 wrr\n"),
            Some(60)
        );
        assert_eq!(applied_ops("writes: 0\n"), None);
        assert_eq!(
            verdict("ok ops: 0"),
            Some(Verdict {
                ok: true,
                detail: "ops: 0".into()
            })
        );
        assert_eq!(verdict("FAIL x").map(|v| v.ok), Some(false));
        assert_eq!(verdict("ok").map(|v| v.detail), Some(String::new()));
        assert_eq!(verdict("okay"), None);
    }

    #[test]
    fn readyz_reads_the_verdict_and_refusals() {
        // balancer-standalone's `readyz.txt`.
        let r = readyz("ready: 1 services, 3 destinations, 3 health checks\nrefused: add destination 192.0.2.255:80 to TCP 192.0.2.100:80 weight 0: kernel refused with EINVAL (Invalid argument (os error 22)) (a tunnel destination must be a unicast address this node has a route to; ipvsadm says \"address not unicast\")\n").unwrap();
        assert!(r.ready);
        assert_eq!(r.summary, "1 services, 3 destinations, 3 health checks");
        assert_eq!(r.refused.len(), 1);
        assert!(r.refused[0].starts_with("add destination 192.0.2.255:80 to TCP 192.0.2.100:80"));
        // web-daemon's `web1-readyz.txt`, with curl's write-out after the body.
        let r = readyz("ready: Ready: tunl0 up; 192.0.2.100 on lvstun0\ncurl: code=200\n").unwrap();
        assert!(r.summary.starts_with("Ready:"));
        assert!(r.refused.is_empty());
        assert!(!readyz("not ready: waiting\n").unwrap().ready);
        assert!(readyz("").is_err());
    }

    /// Captured in the lab (balancer-vrrp, lb2 as Backup: the entries came from the sync
    /// daemon).
    #[test]
    fn ipvs_conns_parses_the_connection_table() {
        let text = "IPVS connection entries\n\
                    pro expire state       source             virtual            destination\n\
                    TCP 14:59  ESTABLISHED 192.0.2.10:30100   192.0.2.100:80     198.51.100.130:80\n\
                    TCP 01:58  FIN_WAIT    192.0.2.10:49834   192.0.2.100:80     198.51.100.10:80\n";
        let conns = ipvs_conns(text).unwrap();
        assert_eq!(conns.len(), 2);
        assert_eq!(conns[0].state, "ESTABLISHED");
        assert_eq!(conns[0].source_port(), Some(30100));
        assert_eq!(conns[0].virtual_addr, "192.0.2.100:80");
        assert_eq!(conns[0].destination, "198.51.100.130:80");
        assert_eq!(conns[1].expire, "01:58");
        assert_eq!(ipvs_conns("IPVS connection entries\n").unwrap(), vec![]);
        assert!(ipvs_conns("TCP 14:59 ESTABLISHED\n").is_err());
    }

    #[test]
    fn key_values_keep_repeats_in_order() {
        let kv = key_values("a=1\n# c\n\nb=x=y\na=2\r\nnoise\n");
        assert_eq!(kv["a"], vec!["1", "2"]);
        assert_eq!(kv["b"], vec!["x=y"]);
        assert_eq!(kv.len(), 2);
    }

    const STATS: &str = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
TCP  192.0.2.100:80                      6       36        0     2352        0
  -> 198.51.100.10:80                    3       18        0     1176        0
  -> 198.51.100.130:80                   3       18        0     1176        0
UDP  192.0.2.100:53                      0        0        0        0        0
";

    #[test]
    fn ipvs_stats_reads_services_and_destinations() {
        let s = ipvs_stats(STATS).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].protocol, "TCP");
        assert_eq!(s[0].address, "192.0.2.100:80");
        assert_eq!(
            s[0].counters,
            IpvsCounters {
                conns: 6,
                in_pkts: 36,
                out_pkts: 0,
                in_bytes: 2352,
                out_bytes: 0
            }
        );
        assert_eq!(s[0].destinations.len(), 2);
        assert_eq!(s[0].destinations[1].address, "198.51.100.130:80");
        assert_eq!(s[0].destinations[1].counters.conns, 3);
        assert!(s[1].destinations.is_empty());
    }

    #[test]
    fn ipvs_stats_refuses_abbreviated_counters() {
        let text = "TCP  192.0.2.100:80  6  1K  0  2M  0\n";
        assert!(ipvs_stats(text).unwrap_err().contains("--exact"));
    }

    #[test]
    fn ipvs_stats_of_an_empty_table_is_empty() {
        let text = "IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port  Conns InPkts OutPkts InBytes OutBytes\n  -> RemoteAddress:Port\n";
        assert!(ipvs_stats(text).unwrap().is_empty());
    }

    const CURL: &str = "HTTP/1.1 200 OK\r\nNode: www1\r\nContent-Type: text/plain\r\nContent-Length: 15\r\nConnection: close\r\n\r\nserved by www1\ncurl: code=200 local_port=40000 remote=192.0.2.100:80\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nnode: www2\r\n\r\nserved by www2\ncurl: code=200 local_port=40002 remote=192.0.2.100:80\n";

    #[test]
    fn http_responses_one_per_transfer_without_interim_heads() {
        let r = http_responses(CURL).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].status, 200);
        assert_eq!(r[0].header("node"), Some("www1"));
        assert_eq!(r[0].header("Content-Length"), Some("15"));
        assert_eq!(r[1].header("Node"), Some("www2"));
    }

    #[test]
    fn curl_write_outs_are_key_values_per_transfer() {
        let w = curl_write_outs(CURL);
        assert_eq!(w.len(), 2);
        assert_eq!(w[0]["local_port"], "40000");
        assert_eq!(w[1]["remote"], "192.0.2.100:80");
    }

    #[test]
    fn neighbour_and_link_addresses_from_ip_json() {
        let neigh = serde_json::json!([
            {"dst": "192.0.2.1", "dev": "eth0", "lladdr": "02:00:00:02:00:01", "state": ["REACHABLE"]},
            {"dst": "192.0.2.100", "dev": "eth0", "lladdr": "02:00:00:02:00:0b", "state": ["STALE"]},
            {"dst": "192.0.2.99", "dev": "eth0", "state": ["FAILED"]}
        ]);
        assert_eq!(
            neighbour_lladdr(&neigh, "192.0.2.100").as_deref(),
            Some("02:00:00:02:00:0b")
        );
        assert_eq!(neighbour_lladdr(&neigh, "192.0.2.99"), None);
        assert_eq!(neighbour_lladdr(&neigh, "192.0.2.7"), None);
        let link = serde_json::json!([{"ifname": "eth0", "address": "02:00:00:02:00:0b"}]);
        assert_eq!(link_address(&link).as_deref(), Some("02:00:00:02:00:0b"));
    }
}
