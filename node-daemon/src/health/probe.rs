//! One health check against one real server, bounded in time. Does I/O (a TCP connection).
//!
//! HTTP is spoken by hand (HTTP/1.0, `Connection: close`, at most 64 KiB read): a health check
//! needs a status line and a body substring, and a tiny client keeps hundreds of concurrent
//! checks cheap in memory.
//!
//! What a check reports goes into `RealServer.status`, which every tenant that may read the
//! object can see, while the check itself runs from the balancer node's network: so an outcome
//! never quotes the bytes a server sent (a RealServer pointed at some internal service must not
//! turn the balancer into a reader of that service), and a path or `Host` that could smuggle a
//! second request line or header is refused before anything is sent.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most bytes read from a health-check response.
const MAX_RESPONSE: usize = 64 * 1024;

/// What to check.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Probe {
    /// HTTP GET and compare status and body.
    Http {
        /// The real server's own address and check port.
        addr: SocketAddr,
        /// Request path.
        path: String,
        /// `Host` header; the address when `None`.
        host: Option<String>,
        /// Expected status code.
        expect_status: u16,
        /// Substring the body must contain (empty: any body).
        expect_body: String,
    },
    /// TCP connect.
    Tcp {
        /// The real server's own address and check port.
        addr: SocketAddr,
    },
}

/// A check's result: `Ok` or a short reason a person can act on.
pub type Outcome = Result<(), String>;

impl Probe {
    /// Run the check, giving up after `timeout` (connect, write and read together).
    pub async fn run(&self, timeout: Duration) -> Outcome {
        match tokio::time::timeout(timeout, self.run_unbounded()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        }
    }

    async fn run_unbounded(&self) -> Outcome {
        match self {
            Probe::Tcp { addr } => TcpStream::connect(addr)
                .await
                .map(|_| ())
                .map_err(|e| format!("connect {addr}: {e}")),
            Probe::Http {
                addr,
                path,
                host,
                expect_status,
                expect_body,
            } => {
                let host = host.clone().unwrap_or_else(|| addr.ip().to_string());
                request_fields_ok(path, &host)?;
                let mut stream = TcpStream::connect(addr)
                    .await
                    .map_err(|e| format!("connect {addr}: {e}"))?;
                let request = format!(
                    "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: lvstun-health\r\nConnection: close\r\n\r\n"
                );
                stream
                    .write_all(request.as_bytes())
                    .await
                    .map_err(|e| format!("send to {addr}: {e}"))?;
                let mut buf = Vec::with_capacity(1024);
                let mut limited = (&mut stream).take(MAX_RESPONSE as u64);
                limited
                    .read_to_end(&mut buf)
                    .await
                    .map_err(|e| format!("read from {addr}: {e}"))?;
                judge_http(&buf, *expect_status, expect_body)
            }
        }
    }
}

/// Whether a path and `Host` value can go into the request line and header as they are:
/// printable ASCII without spaces (the API refuses anything else; this also covers objects
/// stored before that rule and standalone files). Pure.
pub fn request_fields_ok(path: &str, host: &str) -> Outcome {
    let printable = |s: &str| s.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if !path.starts_with('/') || !printable(path) {
        return Err(
            "the check's path must start with '/' and be printable ASCII without spaces or control characters; not sent"
                .to_string(),
        );
    }
    if host.is_empty() || !printable(host) || host.contains('/') {
        return Err(
            "the check's host must be a host name or address without spaces, '/' or control characters; not sent"
                .to_string(),
        );
    }
    Ok(())
}

/// Decide an HTTP check from the raw response bytes. Pure. The reasons never quote what the
/// server sent (see the module comment), only its size.
pub fn judge_http(response: &[u8], expect_status: u16, expect_body: &str) -> Outcome {
    let text = String::from_utf8_lossy(response);
    let status_line = text.lines().next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let proto = parts.next().unwrap_or_default();
    let code = parts.next().and_then(|c| c.parse::<u16>().ok());
    if !proto.starts_with("HTTP/") {
        return Err(format!(
            "not an HTTP response ({} bytes received)",
            response.len()
        ));
    }
    match code {
        Some(c) if c == expect_status => {}
        Some(c) => return Err(format!("HTTP status {c}, expected {expect_status}")),
        None => return Err("bad HTTP status line".to_string()),
    }
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    if !expect_body.is_empty() && !body.contains(expect_body) {
        return Err(format!(
            "body does not contain {expect_body:?} ({} bytes of body)",
            body.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn a_path_or_host_that_could_smuggle_a_header_is_not_sent() {
        let cases: &[(&str, &str, &str, bool)] = &[
            ("the defaults", "/healthcheck.html", "198.51.100.10", true),
            ("a host with a port", "/", "www.example.com:8080", true),
            ("a percent-encoded space", "/a%20b", "h", true),
            ("a space in the path", "/a b", "h", false),
            (
                "CR/LF in the path",
                "/x HTTP/1.1\r\nX-Injected: 1",
                "h",
                false,
            ),
            ("no leading slash", "healthcheck.html", "h", false),
            ("CR/LF in the host", "/", "h\r\nX-Injected: 1", false),
            ("a URL as the host", "/", "http://h/", false),
            ("an empty host", "/", "", false),
            ("non-ASCII", "/caf\u{e9}", "h", false),
        ];
        for (name, path, host, ok) in cases {
            assert_eq!(request_fields_ok(path, host).is_ok(), *ok, "{name}");
        }
    }

    #[test]
    fn an_outcome_never_quotes_what_the_server_sent() {
        let secret = b"SECRET-TOKEN";
        let responses: [&[u8]; 3] = [
            b"SECRET-TOKEN banner\r\n",
            b"HTTP/1.0 SECRET-TOKEN\r\n\r\n",
            b"HTTP/1.0 200 OK\r\n\r\nSECRET-TOKEN",
        ];
        for response in responses {
            let err = judge_http(response, 200, "OK-BODY").unwrap_err();
            assert!(
                !err.as_bytes().windows(secret.len()).any(|w| w == secret),
                "{err}"
            );
        }
    }

    #[test]
    fn judges_status_and_body() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK";
        assert_eq!(judge_http(ok, 200, "OK"), Ok(()));
        assert_eq!(judge_http(ok, 200, ""), Ok(()));
        let err = judge_http(ok, 204, "OK").unwrap_err();
        assert!(err.contains("HTTP status 200, expected 204"), "{err}");
        let err = judge_http(b"HTTP/1.0 200 OK\r\n\r\nmaintenance", 200, "OK").unwrap_err();
        assert!(err.contains("does not contain \"OK\""), "{err}");
        let err = judge_http(b"SSH-2.0-OpenSSH\r\n", 200, "OK").unwrap_err();
        assert!(err.contains("not an HTTP response"), "{err}");
        assert!(judge_http(b"", 200, "OK").is_err());
    }

    /// A loopback server that answers every connection with `response`.
    async fn serve(response: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut req = [0u8; 1024];
                let _ = s.read(&mut req).await;
                let _ = s.write_all(response).await;
            }
        });
        addr
    }

    fn http(addr: SocketAddr) -> Probe {
        Probe::Http {
            addr,
            path: "/healthcheck.html".into(),
            host: None,
            expect_status: 200,
            expect_body: "OK".into(),
        }
    }

    #[tokio::test]
    async fn http_probe_against_a_loopback_server() {
        let good = serve(b"HTTP/1.0 200 OK\r\n\r\nOK\n").await;
        assert_eq!(http(good).run(Duration::from_secs(2)).await, Ok(()));
        let bad = serve(b"HTTP/1.0 503 Service Unavailable\r\n\r\n").await;
        let err = http(bad).run(Duration::from_secs(2)).await.unwrap_err();
        assert!(err.contains("503"), "{err}");
    }

    #[tokio::test]
    async fn a_hanging_server_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        // Accepts and never answers.
        let _keep = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        let start = std::time::Instant::now();
        let err = http(addr)
            .run(Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(err.contains("no answer within 200 ms"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn refused_connections_fail_tcp_and_http() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let err = Probe::Tcp { addr }
            .run(Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(err.contains("connect"), "{err}");
        assert!(http(addr).run(Duration::from_secs(2)).await.is_err());
        let open = serve(b"").await;
        assert_eq!(
            Probe::Tcp { addr: open }.run(Duration::from_secs(2)).await,
            Ok(())
        );
    }
}
