//! `lvstun-lab-load`: the lab's load generator, one long-lived process that measures what a
//! client sees while the VIP moves.
//!
//! Why a program and not a shell loop of `curl`: under TCG every fork costs most of a second
//! (LAB-NOTES.md), which would hide any outage shorter than that. This sends one HTTP/1.1 GET
//! on a new TCP connection every `--interval-ms` (default 10), sequentially, for
//! `--duration-s` seconds, and stamps each result into `--out`. With `--workers N` (1..=16),
//! N such senders run side by side, started `interval / N` apart: under TCG one request takes
//! 30-200 ms, so a single sender would measure an outage only to within one request's time;
//! their stamps are merged in send order before the summary.
//!
//! ```text
//! # seq send_ms status node latency_ms error
//! 0 0.000 200 www1 3.215 -
//! 1 10.021 0 - 200.312 connect:timed_out
//! ```
//!
//! then prints a summary of `key=value` lines on stdout: `requests`, `ok`, `failures`,
//! `longest_gap_ms` (the longest time between the send times of two consecutive successful
//! requests: the client-observed outage), `gap_from_ms`/`gap_to_ms` (where it was),
//! `first_failure_ms`/`last_failure_ms`, `start_unix_ms`, and `node.<name>=count` per `Node`
//! header.
//!
//! Bounded in every dimension: at most `--duration-s` (1..=600) seconds and `--max-requests`
//! (default and cap 100000) requests; each connect and each response has a timeout. Traffic
//! goes only to the one address in `--url`, which must be an IP literal (no name lookups).
//!
//! With `--sources FIRST-LAST` (IPv4 addresses the client namespace holds, at most 256) it
//! sends exactly one request from each source address instead, in order, and prints
//! `source.<address>=<node>` for each (`-` when it failed): which real server the balancer
//! picked for each client. A hashing scheduler (`mh`, `sh`) hashes the source address, so two
//! balancers that agree send every source to the same node. The stamps then carry the source
//! as a last column.
//!
//! Usage: `lvstun-lab-load --url http://192.0.2.100/ [--interval-ms 10] [--duration-s 10]
//! [--connect-timeout-ms 200] [--timeout-ms 1000] [--max-requests N] [--workers N] [--out FILE]
//! [--sources FIRST-LAST] [--stop-file PATH]` (`--stop-file`: a timed run also ends once PATH
//! exists)

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

/// The largest response read; the lab's web fixture answers with a few hundred bytes.
const MAX_RESPONSE: usize = 64 * 1024;
/// Hard cap on requests, whatever the flags say.
const MAX_REQUESTS: u64 = 100_000;
/// Hard cap on `--sources`.
const MAX_SOURCES: u32 = 256;

struct Args {
    addr: SocketAddr,
    host: String,
    path: String,
    interval: Duration,
    duration: Duration,
    connect_timeout: Duration,
    timeout: Duration,
    max_requests: u64,
    workers: u32,
    out: Option<String>,
    /// One request from each of these addresses, instead of a timed run.
    sources: Vec<Ipv4Addr>,
    /// A timed run also ends once this file exists: a scenario whose phase lasts as long as
    /// something outside it takes (a rolling upgrade) ends the load when the phase ends,
    /// still bounded by the duration.
    stop_file: Option<std::path::PathBuf>,
}

/// Parses `FIRST-LAST` (IPv4, FIRST <= LAST, at most [`MAX_SOURCES`] addresses).
fn parse_sources(text: &str) -> anyhow::Result<Vec<Ipv4Addr>> {
    let (a, b) = text
        .split_once('-')
        .context("--sources wants FIRST-LAST, e.g. 192.0.2.64-192.0.2.127")?;
    let first: Ipv4Addr = a.parse().with_context(|| format!("--sources: {a:?}"))?;
    let last: Ipv4Addr = b.parse().with_context(|| format!("--sources: {b:?}"))?;
    let (first, last) = (u32::from(first), u32::from(last));
    if last < first || last - first >= MAX_SOURCES {
        bail!("--sources must name 1..={MAX_SOURCES} addresses, first <= last");
    }
    Ok((first..=last).map(Ipv4Addr::from).collect())
}

/// Splits `http://IP[:PORT]/PATH` into address, Host header and path. Only IP literals: the
/// lab never resolves names, and a typo must not send traffic anywhere else.
fn parse_url(url: &str) -> anyhow::Result<(SocketAddr, String, String)> {
    let rest = url
        .strip_prefix("http://")
        .context("--url must start with http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = match authority.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            let ip: IpAddr = authority
                .parse()
                .with_context(|| format!("--url host {authority:?} must be an IP literal"))?;
            SocketAddr::new(ip, 80)
        }
    };
    Ok((addr, authority.to_owned(), path.to_owned()))
}

fn parse_args(args: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let mut url = None;
    let mut interval_ms = 10u64;
    let mut duration_s = 10u64;
    let mut connect_ms = 200u64;
    let mut timeout_ms = 1000u64;
    let mut max_requests = MAX_REQUESTS;
    let mut out = None;
    let mut workers = 1u64;
    let mut sources = Vec::new();
    let mut stop_file = None;
    let mut it = args;
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let num = || {
            value
                .parse::<u64>()
                .with_context(|| format!("{flag} wants a number, got {value:?}"))
        };
        match flag.as_str() {
            "--url" => url = Some(value.clone()),
            "--interval-ms" => interval_ms = num()?,
            "--duration-s" => duration_s = num()?,
            "--connect-timeout-ms" => connect_ms = num()?,
            "--timeout-ms" => timeout_ms = num()?,
            "--max-requests" => max_requests = num()?,
            "--out" => out = Some(value.clone()),
            "--workers" => workers = num()?,
            "--sources" => sources = parse_sources(&value)?,
            "--stop-file" => stop_file = Some(std::path::PathBuf::from(&value)),
            _ => bail!("unknown flag {flag}"),
        }
    }
    let (addr, host, path) = parse_url(&url.context("--url is required")?)?;
    if !(1..=600).contains(&duration_s) {
        bail!("--duration-s must be 1..=600");
    }
    if !(1..=10_000).contains(&interval_ms) || connect_ms == 0 || timeout_ms == 0 {
        bail!("--interval-ms must be 1..=10000 and timeouts positive");
    }
    if !(1..=16).contains(&workers) {
        bail!("--workers must be 1..=16");
    }
    Ok(Args {
        addr,
        host,
        path,
        interval: Duration::from_millis(interval_ms),
        duration: Duration::from_secs(duration_s),
        connect_timeout: Duration::from_millis(connect_ms),
        timeout: Duration::from_millis(timeout_ms),
        max_requests: max_requests.min(MAX_REQUESTS),
        workers: u32::try_from(workers).unwrap_or(1),
        out,
        sources,
        stop_file,
    })
}

/// What one request got.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    /// HTTP status; 0 when there was no response.
    status: u16,
    /// The `Node` header, if any.
    node: Option<String>,
    /// Why it failed, as a short token (never text from the network).
    error: Option<String>,
}

/// Reads the status code and `Node` header from a response head. Pure.
fn parse_head(head: &str) -> Option<(u16, Option<String>)> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let mut parts = status_line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    let node = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("node")
            .then(|| v.trim().to_owned())
    });
    Some((status, node))
}

fn error_token(stage: &str, err: &std::io::Error) -> String {
    format!("{stage}:{:?}", err.kind()).to_lowercase()
}

/// A TCP connection to `addr`, from `source` when given (bound before connecting).
fn connect(
    addr: &SocketAddr,
    source: Option<Ipv4Addr>,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect_timeout(addr, timeout);
    };
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(IpAddr::V4(source), 0).into())?;
    socket.connect_timeout(&(*addr).into(), timeout)?;
    Ok(socket.into())
}

fn request(args: &Args, source: Option<Ipv4Addr>) -> Outcome {
    let fail = |error: String| Outcome {
        status: 0,
        node: None,
        error: Some(error),
    };
    let mut stream = match connect(&args.addr, source, args.connect_timeout) {
        Ok(s) => s,
        Err(e) => return fail(error_token("connect", &e)),
    };
    let _ = stream.set_read_timeout(Some(args.timeout));
    let _ = stream.set_write_timeout(Some(args.timeout));
    let _ = stream.set_nodelay(true);
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: lvstun-lab-load\r\nConnection: close\r\n\r\n",
        args.path, args.host
    );
    if let Err(e) = stream.write_all(req.as_bytes()) {
        return fail(error_token("write", &e));
    }
    let deadline = Instant::now() + args.timeout;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        // A complete head is enough: the status and Node header are in it.
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]);
            return match parse_head(&head) {
                Some((status, node)) => Outcome {
                    status,
                    node,
                    error: None,
                },
                None => fail("bad_response".into()),
            };
        }
        if buf.len() >= MAX_RESPONSE || Instant::now() >= deadline {
            return fail("read:timed_out".into());
        }
        match stream.read(&mut chunk) {
            Ok(0) => return fail("read:eof".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return fail(error_token("read", &e)),
        }
    }
}

/// One stamped result.
struct Stamp {
    send: Duration,
    latency: Duration,
    outcome: Outcome,
    /// The source address it was sent from, with `--sources`.
    source: Option<Ipv4Addr>,
}

/// What the summary says. Pure, from the stamps.
#[derive(Debug, Default, PartialEq)]
struct Summary {
    requests: usize,
    ok: usize,
    longest_gap: Duration,
    gap_from: Duration,
    gap_to: Duration,
    first_failure: Option<Duration>,
    last_failure: Option<Duration>,
    per_node: BTreeMap<String, usize>,
}

fn summarize(stamps: &[Stamp], total: Duration) -> Summary {
    let mut s = Summary {
        requests: stamps.len(),
        ..Summary::default()
    };
    let mut last_ok: Option<Duration> = None;
    for st in stamps {
        if st.outcome.status == 200 {
            s.ok += 1;
            *s.per_node
                .entry(st.outcome.node.clone().unwrap_or_else(|| "-".into()))
                .or_default() += 1;
            if let Some(prev) = last_ok {
                let gap = st.send.saturating_sub(prev);
                if gap > s.longest_gap {
                    s.longest_gap = gap;
                    s.gap_from = prev;
                    s.gap_to = st.send;
                }
            }
            last_ok = Some(st.send);
        } else {
            s.first_failure.get_or_insert(st.send);
            s.last_failure = Some(st.send);
        }
    }
    if s.ok == 0 {
        s.longest_gap = total;
        s.gap_to = total;
    }
    s
}

/// One sender: a request every interval from `first`, until the duration or `budget` is used.
fn sender(args: &Args, start: Instant, first: Instant, budget: u64) -> Vec<Stamp> {
    let mut stamps = Vec::new();
    let mut next = first;
    while (stamps.len() as u64) < budget && start.elapsed() < args.duration {
        if args
            .stop_file
            .as_deref()
            .is_some_and(std::path::Path::exists)
        {
            break;
        }
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        let sent = Instant::now();
        let outcome = request(args, None);
        stamps.push(Stamp {
            send: sent - start,
            latency: sent.elapsed(),
            outcome,
            source: None,
        });
        // The next request is due one interval after this one was sent; a slow request is not
        // followed by a burst to catch up.
        next = (sent + args.interval).max(Instant::now());
    }
    stamps
}

/// With `--sources`: worker `index` of `workers` sends one request from every `workers`-th
/// source, starting at its index; bounded by the duration like a timed run.
fn source_sender(args: &Args, start: Instant, index: usize, workers: usize) -> Vec<Stamp> {
    let mut stamps = Vec::new();
    for source in args.sources.iter().skip(index).step_by(workers) {
        if start.elapsed() >= args.duration {
            break;
        }
        let sent = Instant::now();
        let outcome = request(args, Some(*source));
        stamps.push(Stamp {
            send: sent - start,
            latency: sent.elapsed(),
            outcome,
            source: Some(*source),
        });
    }
    stamps
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args(std::env::args().skip(1))?;
    let start_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let start = Instant::now();
    let budget = args.max_requests / u64::from(args.workers);
    let mut stamps: Vec<Stamp> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.workers)
            .map(|i| {
                let args = &args;
                let offset = args.interval * i / args.workers;
                let workers = args.workers as usize;
                scope.spawn(move || {
                    if args.sources.is_empty() {
                        sender(args, start, start + offset, budget)
                    } else {
                        source_sender(args, start, i as usize, workers)
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    stamps.sort_by_key(|s| s.send);
    let total = start.elapsed();

    if let Some(path) = &args.out {
        let mut text = String::from("# seq send_ms status node latency_ms error [source]\n");
        for (i, st) in stamps.iter().enumerate() {
            let _ = write!(
                text,
                "{i} {} {} {} {} {}",
                ms(st.send),
                st.outcome.status,
                st.outcome.node.as_deref().unwrap_or("-"),
                ms(st.latency),
                st.outcome.error.as_deref().unwrap_or("-"),
            );
            match st.source {
                Some(source) => {
                    let _ = writeln!(text, " {source}");
                }
                None => text.push('\n'),
            }
        }
        std::fs::write(path, text).with_context(|| format!("writing {path}"))?;
    }
    let s = summarize(&stamps, total);
    let mut out = String::new();
    let _ = writeln!(out, "start_unix_ms={start_unix_ms}");
    let _ = writeln!(out, "duration_ms={}", ms(total));
    let _ = writeln!(out, "requests={}", s.requests);
    let _ = writeln!(out, "ok={}", s.ok);
    let _ = writeln!(out, "failures={}", s.requests - s.ok);
    let _ = writeln!(out, "longest_gap_ms={}", ms(s.longest_gap));
    let _ = writeln!(out, "gap_from_ms={}", ms(s.gap_from));
    let _ = writeln!(out, "gap_to_ms={}", ms(s.gap_to));
    if let (Some(f), Some(l)) = (s.first_failure, s.last_failure) {
        let _ = writeln!(out, "first_failure_ms={}", ms(f));
        let _ = writeln!(out, "last_failure_ms={}", ms(l));
    }
    for (node, count) in &s.per_node {
        let _ = writeln!(out, "node.{node}={count}");
    }
    let mut by_source: Vec<&Stamp> = stamps.iter().filter(|st| st.source.is_some()).collect();
    by_source.sort_by_key(|st| st.source);
    for st in by_source {
        let node = match (&st.outcome.status, &st.outcome.node) {
            (200, Some(node)) => node.as_str(),
            _ => "-",
        };
        if let Some(source) = st.source {
            let _ = writeln!(out, "source.{source}={node}");
        }
    }
    print!("{out}");
    std::io::stdout().flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_must_be_an_ip_literal() {
        let (a, h, p) = parse_url("http://192.0.2.100/x?y").unwrap();
        assert_eq!(
            (a.to_string(), h, p),
            ("192.0.2.100:80".into(), "192.0.2.100".into(), "/x?y".into())
        );
        let (a, _, p) = parse_url("http://127.0.0.1:8080").unwrap();
        assert_eq!((a.port(), p.as_str()), (8080, "/"));
        assert!(parse_url("http://example.com/").is_err());
        assert!(parse_url("https://192.0.2.100/").is_err());
    }

    #[test]
    fn head_parsing() {
        let h = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nnode: www2";
        assert_eq!(parse_head(h), Some((200, Some("www2".into()))));
        assert_eq!(parse_head("HTTP/1.0 503 x"), Some((503, None)));
        assert_eq!(parse_head("SSH-2.0"), None);
    }

    fn st(send_ms: u64, status: u16, node: &str) -> Stamp {
        Stamp {
            send: Duration::from_millis(send_ms),
            latency: Duration::from_millis(1),
            outcome: Outcome {
                status,
                node: Some(node.into()),
                error: None,
            },
            source: None,
        }
    }

    #[test]
    fn summary_finds_the_longest_gap_between_successes() {
        let stamps = [
            st(0, 200, "a"),
            st(10, 200, "b"),
            st(20, 0, "-"),
            st(220, 0, "-"),
            st(420, 200, "a"),
            st(430, 200, "b"),
        ];
        let s = summarize(&stamps, Duration::from_millis(440));
        assert_eq!(s.requests, 6);
        assert_eq!(s.ok, 4);
        assert_eq!(s.longest_gap, Duration::from_millis(410));
        assert_eq!(
            (s.gap_from, s.gap_to),
            (Duration::from_millis(10), Duration::from_millis(420))
        );
        assert_eq!(s.first_failure, Some(Duration::from_millis(20)));
        assert_eq!(s.per_node.get("a"), Some(&2));
        let none = summarize(&[st(0, 0, "-")], Duration::from_secs(3));
        assert_eq!(none.longest_gap, Duration::from_secs(3));
    }

    #[test]
    fn sources_are_a_bounded_ipv4_range() {
        let s = parse_sources("192.0.2.64-192.0.2.66").unwrap();
        assert_eq!(
            s,
            ["192.0.2.64", "192.0.2.65", "192.0.2.66"].map(|a| a.parse::<Ipv4Addr>().unwrap())
        );
        assert!(parse_sources("192.0.2.66-192.0.2.64").is_err());
        assert!(parse_sources("192.0.2.0-192.0.3.0").is_err());
        assert!(parse_sources("192.0.2.1").is_err());
    }

    #[test]
    fn args_are_bounded() {
        let a = |s: &str| parse_args(s.split_whitespace().map(str::to_owned));
        assert!(a("--url http://192.0.2.100/ --duration-s 601").is_err());
        assert!(a("--url http://192.0.2.100/ --interval-ms 0").is_err());
        let ok = a("--url http://192.0.2.100/ --max-requests 999999").unwrap();
        assert_eq!(ok.max_requests, MAX_REQUESTS);
        assert_eq!(ok.interval, Duration::from_millis(10));
        assert_eq!(ok.workers, 1);
        assert!(a("--url http://192.0.2.100/ --workers 17").is_err());
        assert_eq!(ok.stop_file, None);
        let stop = a("--url http://192.0.2.100/ --duration-s 600 --stop-file /tmp/x").unwrap();
        assert_eq!(
            stop.stop_file.as_deref(),
            Some(std::path::Path::new("/tmp/x"))
        );
        assert_eq!(stop.duration, Duration::from_secs(600));
    }
}
