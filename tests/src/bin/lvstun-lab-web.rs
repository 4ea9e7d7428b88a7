//! `lvstun-lab-web`: the real server of the lab, a tiny HTTP/1.1 server.
//!
//! It stands in for the web farm of the classic LVS-TUN recipe. Scenarios need three things from
//! it, and nothing more, so it carries no framework:
//! - `GET /healthcheck.html` answers `200 OK` with the body `OK` (what the default health check
//!   of a `VirtualService` expects);
//! - any other `GET` answers `200` with a `Node: <name>` header and a short body naming the node,
//!   so a client can tell which real server answered through the VIP;
//! - `POST` with a body of any size (`Content-Length`, `Expect: 100-continue` honoured) answers
//!   with the number of body bytes it read, so MTU scenarios can prove a large upload arrived
//!   whole through the tunnel.
//!
//! Usage: `lvstun-lab-web --listen 0.0.0.0:80 --name www1`. It prints one line
//! `listening on <addr> as <name>` on stdout once the socket is bound, and one line per request
//! on stderr. Every read is bounded by a timeout so a stuck peer cannot hold a task forever.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Longest request head (request line and headers) accepted, in bytes.
const MAX_HEAD: usize = 16 * 1024;
/// How long a connection may stay silent before it is closed.
const IDLE: Duration = Duration::from_secs(30);

struct Args {
    listen: SocketAddr,
    name: String,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut listen = None;
    let mut name = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--listen" => listen = Some(it.next().context("--listen needs ADDR:PORT")?),
            "--name" => name = Some(it.next().context("--name needs a value")?),
            "-h" | "--help" => {
                println!("usage: lvstun-lab-web --listen ADDR:PORT --name NAME");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    let listen = listen
        .context("--listen ADDR:PORT is required")?
        .parse()
        .context("--listen must be ADDR:PORT")?;
    let name = name.context("--name is required")?;
    if name.is_empty() || name.chars().any(|c| c.is_control()) {
        bail!("--name must be a non-empty printable string");
    }
    Ok(Args { listen, name })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("bind {}", args.listen))?;
    println!("listening on {} as {}", listener.local_addr()?, args.name);
    let name: &'static str = Box::leak(args.name.into_boxed_str());
    loop {
        let (stream, peer) = listener.accept().await.context("accept")?;
        tokio::spawn(async move {
            if let Err(e) = serve(stream, peer, name).await {
                eprintln!("{peer}: {e:#}");
            }
        });
    }
}

/// One parsed request head.
struct Head {
    method: String,
    path: String,
    content_length: u64,
    expect_continue: bool,
    close: bool,
}

/// Serves requests on one connection until the peer closes it or asks to.
async fn serve(stream: TcpStream, peer: SocketAddr, name: &str) -> anyhow::Result<()> {
    let mut conn = BufReader::new(stream);
    loop {
        let Some(head) = read_head(&mut conn).await? else {
            return Ok(());
        };
        let (status, body) = match head.method.as_str() {
            "GET" | "HEAD" if head.path == "/healthcheck.html" => ("200 OK", "OK".to_string()),
            "GET" | "HEAD" => ("200 OK", format!("served by {name}\n")),
            "POST" | "PUT" => {
                if head.expect_continue {
                    conn.get_mut()
                        .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                        .await?;
                }
                let n = drain_body(&mut conn, head.content_length).await?;
                ("200 OK", format!("{n}\n"))
            }
            _ => ("405 Method Not Allowed", "method not allowed\n".to_string()),
        };
        eprintln!("{peer} {} {} -> {status}", head.method, head.path);
        let connection = if head.close { "close" } else { "keep-alive" };
        let mut response = format!(
            "HTTP/1.1 {status}\r\nNode: {name}\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\nConnection: {connection}\r\n\r\n",
            body.len()
        );
        if head.method != "HEAD" {
            response.push_str(&body);
        }
        conn.get_mut().write_all(response.as_bytes()).await?;
        if head.close {
            conn.get_mut().shutdown().await?;
            return Ok(());
        }
    }
}

/// Reads a request head; `None` when the peer closed the connection between requests.
async fn read_head(conn: &mut BufReader<TcpStream>) -> anyhow::Result<Option<Head>> {
    let mut lines = Vec::new();
    let mut total = 0usize;
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(IDLE, conn.read_line(&mut line))
            .await
            .context("idle timeout")??;
        if n == 0 {
            if lines.is_empty() {
                return Ok(None);
            }
            bail!("connection closed inside a request head");
        }
        total += n;
        if total > MAX_HEAD {
            bail!("request head longer than {MAX_HEAD} bytes");
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            if lines.is_empty() {
                continue; // tolerate stray CRLF between requests (RFC 9112 section 2.2)
            }
            break;
        }
        lines.push(line);
    }
    let mut request_line = lines[0].split_whitespace();
    let method = request_line.next().unwrap_or_default().to_string();
    let path = request_line.next().unwrap_or_default().to_string();
    let version = request_line.next().unwrap_or_default().to_string();
    let mut head = Head {
        method,
        path,
        content_length: 0,
        expect_continue: false,
        close: version == "HTTP/1.0",
    };
    for line in &lines[1..] {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                head.content_length = value.parse().context("bad Content-Length")?;
            }
            "expect" => head.expect_continue = value.eq_ignore_ascii_case("100-continue"),
            "connection" => {
                if value.eq_ignore_ascii_case("close") {
                    head.close = true;
                } else if value.eq_ignore_ascii_case("keep-alive") {
                    head.close = false;
                }
            }
            "transfer-encoding" => bail!("chunked bodies are not supported: send Content-Length"),
            _ => {}
        }
    }
    Ok(Some(head))
}

/// Reads and discards exactly `len` body bytes, returning how many arrived.
async fn drain_body(conn: &mut BufReader<TcpStream>, len: u64) -> anyhow::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left.min(buf.len() as u64))?;
        let n = tokio::time::timeout(IDLE, conn.read(&mut buf[..want]))
            .await
            .context("idle timeout in body")??;
        if n == 0 {
            bail!("body ended after {} of {len} bytes", len - left);
        }
        left -= n as u64;
    }
    Ok(len)
}
