//! The lab's web fixture (`lvstun-lab-web`) on host loopback, no VM: the behaviour scenarios
//! rely on (health check page, `Node` header, uploads of any size, keep-alive) is pinned here
//! so that a scenario failure never has to suspect the fixture.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

struct Fixture {
    child: Child,
    addr: String,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(name: &str) -> Result<Fixture> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lvstun-lab-web"))
        .args(["--listen", "127.0.0.1:0", "--name", name])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start lvstun-lab-web")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut fixture = Fixture {
        child,
        addr: String::new(),
    };
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    // "listening on 127.0.0.1:PORT as NAME"
    fixture.addr = line
        .split_whitespace()
        .nth(2)
        .with_context(|| format!("no address in {line:?}"))?
        .to_string();
    anyhow::ensure!(line.trim_end().ends_with(&format!("as {name}")), "{line}");
    Ok(fixture)
}

type Response = (String, Vec<(String, String)>, String);

/// Sends `request` and reads one response: (status line, headers, body).
fn exchange(stream: &mut TcpStream, request: &[u8]) -> Result<Response> {
    stream.write_all(request)?;
    read_response(stream)
}

fn read_response(stream: &mut TcpStream) -> Result<Response> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end().to_string();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').context("header field")?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = match header(&headers, "content-length") {
        Some(v) => v.parse()?,
        None => 0,
    };
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok((
        status.trim_end().to_string(),
        headers,
        String::from_utf8(body)?,
    ))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn connect(f: &Fixture) -> Result<TcpStream> {
    let s = TcpStream::connect(&f.addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(s)
}

#[test]
fn healthcheck_page_says_ok() -> Result<()> {
    let f = start("www1")?;
    let mut s = connect(&f)?;
    let (status, headers, body) = exchange(
        &mut s,
        b"GET /healthcheck.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )?;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body, "OK");
    assert_eq!(header(&headers, "connection"), Some("close"));
    Ok(())
}

#[test]
fn other_pages_name_the_node_and_keep_alive_serves_several_requests() -> Result<()> {
    let f = start("www2")?;
    let mut s = connect(&f)?;
    for path in ["/", "/index.html"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let (status, headers, body) = exchange(&mut s, request.as_bytes())?;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(header(&headers, "node"), Some("www2"));
        assert!(body.contains("www2"), "{body}");
    }
    Ok(())
}

#[test]
fn uploads_of_any_size_are_counted_with_and_without_100_continue() -> Result<()> {
    let f = start("www1")?;
    let mut s = connect(&f)?;
    let size = 3 * 1024 * 1024 + 7;
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\nExpect: 100-continue\r\n\r\n"
    );
    s.write_all(head.as_bytes())?;
    let (status, _, _) = read_response(&mut s)?;
    assert_eq!(status, "HTTP/1.1 100 Continue");
    s.write_all(&vec![b'x'; size])?;
    let (status, headers, body) = read_response(&mut s)?;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body.trim(), size.to_string());
    assert_eq!(header(&headers, "node"), Some("www1"));

    let (_, _, body) = exchange(
        &mut s,
        b"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )?;
    assert_eq!(body.trim(), "5");
    Ok(())
}

#[test]
fn bad_arguments_are_refused() -> Result<()> {
    let out = Command::new(env!("CARGO_BIN_EXE_lvstun-lab-web"))
        .args(["--listen", "not-an-address", "--name", "www1"])
        .output()?;
    assert!(!out.status.success());
    let out = Command::new(env!("CARGO_BIN_EXE_lvstun-lab-web"))
        .args(["--listen", "127.0.0.1:0"])
        .output()?;
    assert!(!out.status.success());
    Ok(())
}
