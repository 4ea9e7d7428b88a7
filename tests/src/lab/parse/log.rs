//! The daemons' log lines typed: level, target, message and fields, from either of
//! `lvstun-node`'s `--log-format`s (tracing's text lines, which the lab's scenarios record, or
//! its JSON lines, which the pods' logs hold). Pure, no I/O.
//!
//! A check reads "lb1's first pass sent 3 operations, none failed" as `fields["ops"] == "3"`,
//! and "lb2 went Master to Initialize once" as a count of typed [`VrrpTransition`]s, instead
//! of a phase's count of matching lines or a substring of a line.
//!
//! Text lines are `TIMESTAMP LEVEL TARGET: MESSAGE key=value ...`. A quoted value is read with
//! its escapes; an unquoted one (a `Display` value, which may hold spaces) runs to the next
//! ` key=`, a key being a plain identifier (so `sysctl net.ipv4.conf.eth0.arp_ignore=0` stays
//! in the message).

use std::collections::BTreeMap;

/// One log event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The timestamp as printed (RFC 3339, UTC).
    pub timestamp: String,
    /// `TRACE`, `DEBUG`, `INFO`, `WARN` or `ERROR`.
    pub level: String,
    /// The module that logged (`lvstun_node::balancer::run`).
    pub target: String,
    /// The message.
    pub message: String,
    /// The structured fields, by name, values unquoted.
    pub fields: BTreeMap<String, String>,
}

impl LogLine {
    /// A field's value.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    /// A field read as a number.
    pub fn num(&self, key: &str) -> Option<u64> {
        self.field(key)?.parse().ok()
    }
}

/// Parses one line in either format (JSON when it starts with `{`).
pub fn line(text: &str) -> Result<LogLine, String> {
    let text = text.trim();
    if text.starts_with('{') {
        json_line(text)
    } else {
        text_line(text)
    }
}

/// Parses every line of a log file that is a log event; other lines (a panic's backtrace, a
/// shell's message) are skipped, since a daemon's log is not only its events.
pub fn lines(text: &str) -> Vec<LogLine> {
    text.lines().filter_map(|l| line(l).ok()).collect()
}

const LEVELS: [&str; 5] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"];

fn text_line(text: &str) -> Result<LogLine, String> {
    let not_a_line = || format!("not a log line: {text:?}");
    let (timestamp, rest) = text
        .split_once(char::is_whitespace)
        .ok_or_else(not_a_line)?;
    // Levels are right-aligned to five columns (`  INFO`).
    let (level, rest) = rest
        .trim_start()
        .split_once(char::is_whitespace)
        .ok_or_else(not_a_line)?;
    if !LEVELS.contains(&level) || !timestamp.contains('T') {
        return Err(not_a_line());
    }
    let (target, body) = rest
        .trim_start()
        .split_once(": ")
        .ok_or_else(|| format!("no target in {text:?}"))?;
    let (message, fields) = message_and_fields(body);
    Ok(LogLine {
        timestamp: timestamp.to_owned(),
        level: level.to_owned(),
        target: target.to_owned(),
        message: message.to_owned(),
        fields,
    })
}

/// Splits `MESSAGE key=value ...` (the body of a text log line) into the text before the
/// first field and the fields.
pub fn message_and_fields(body: &str) -> (&str, BTreeMap<String, String>) {
    let starts = field_starts(body);
    let message = match starts.first() {
        Some(&i) => body[..i].trim_end(),
        None => body.trim_end(),
    };
    let mut fields = BTreeMap::new();
    for (k, &start) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(body.len());
        if let Some((key, value)) = body[start..end].split_once('=') {
            fields.insert(key.to_owned(), unquote(value.trim_end()));
        }
    }
    (message, fields)
}

/// Byte offsets where a ` key=` field starts: after whitespace (or at 0), an identifier, `=`;
/// positions inside a quoted value are not starts.
fn field_starts(body: &str) -> Vec<usize> {
    let bytes = body.as_bytes();
    let mut starts = Vec::new();
    let mut i = 0;
    let mut in_quotes = false;
    while i < bytes.len() {
        let c = bytes[i];
        if in_quotes {
            match c {
                b'\\' => i += 1,
                b'"' => in_quotes = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        let at_word = i == 0 || bytes[i - 1].is_ascii_whitespace();
        if at_word && (c.is_ascii_alphabetic() || c == b'_') {
            let mut j = i;
            while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                j += 1;
            }
            if bytes.get(j) == Some(&b'=') {
                starts.push(i);
                if bytes.get(j + 1) == Some(&b'"') {
                    in_quotes = true;
                    i = j + 2;
                    continue;
                }
            }
            i = j.max(i + 1);
            continue;
        }
        i += 1;
    }
    starts
}

/// `"a \"b\""` to `a "b"`; an unquoted value as it is.
fn unquote(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return value.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(c) => out.push(c),
                None => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

fn json_line(text: &str) -> Result<LogLine, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON ({e}): {text:?}"))?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    let mut fields: BTreeMap<String, String> = v
        .get("fields")
        .and_then(|f| f.as_object())
        .ok_or_else(|| format!("no fields in {text:?}"))?
        .iter()
        .map(|(k, x)| {
            let value = match x {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), value)
        })
        .collect();
    Ok(LogLine {
        timestamp: s("timestamp").unwrap_or_default(),
        level: s("level").ok_or_else(|| format!("no level in {text:?}"))?,
        target: s("target").unwrap_or_default(),
        message: fields.remove("message").unwrap_or_default(),
        fields,
    })
}

/// The VRRP states lvstun logs (RFC 9568 §6.4, Initialize/Backup/Master, and Fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VrrpState {
    /// Not running the protocol yet (or any more).
    Initialize,
    /// Listening.
    Backup,
    /// Holding the VIPs.
    Master,
    /// The interface is unusable.
    Fault,
}

impl VrrpState {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "Initialize" => Some(Self::Initialize),
            "Backup" => Some(Self::Backup),
            "Master" => Some(Self::Master),
            "Fault" => Some(Self::Fault),
            _ => None,
        }
    }
}

/// One `vip ownership changed` event of the balancer: the VIPs of `vrid` went `from` → `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpTransition {
    /// The virtual router.
    pub vrid: u8,
    /// The state left.
    pub from: VrrpState,
    /// The state entered.
    pub to: VrrpState,
    /// When, in the daemon's clock (`unix_ms`), if logged.
    pub unix_ms: Option<u64>,
}

/// The VIP ownership transitions in a balancer's log, in order.
pub fn vrrp_transitions(log: &[LogLine]) -> Vec<VrrpTransition> {
    log.iter()
        .filter(|l| l.message == "vip ownership changed")
        .filter_map(|l| {
            Some(VrrpTransition {
                vrid: l.field("vrid")?.parse().ok()?,
                from: VrrpState::parse(l.field("from")?)?,
                to: VrrpState::parse(l.field("to")?)?,
                unix_ms: l.num("unix_ms"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// balancer-standalone's `refused_log` (results.txt): a Display value with spaces, a
    /// quoted one with escaped quotes.
    const REFUSED: &str = r#"2026-12-07T13:22:22.896660Z ERROR lvstun_node::balancer::run: kernel refused an operation; the same operation waits for the back-off op=add destination 192.0.2.255:80 to TCP 192.0.2.100:80 weight 0 errno=EINVAL (Invalid argument (os error 22)) hint="a tunnel destination must be a unicast address this node has a route to; ipvsadm says \"address not unicast\"" retry_in_s=30"#;

    #[test]
    fn text_lines_split_message_and_fields() {
        let l = line("2026-12-07T13:21:52.851519Z  INFO lvstun_node::balancer::run: reconciled trigger=start read=true ops=3 applied=3 failed=0 held=0 services=1 destinations=2 checks=2 owned=1 elapsed_ms=111").unwrap();
        assert_eq!(l.level, "INFO");
        assert_eq!(l.target, "lvstun_node::balancer::run");
        assert_eq!(l.message, "reconciled");
        assert_eq!(l.field("trigger"), Some("start"));
        assert_eq!(l.num("ops"), Some(3));
        assert_eq!(l.num("elapsed_ms"), Some(111));
        assert_eq!(l.fields.len(), 11);

        let r = line(REFUSED).unwrap();
        assert_eq!(r.level, "ERROR");
        assert_eq!(
            r.message,
            "kernel refused an operation; the same operation waits for the back-off"
        );
        assert_eq!(
            r.field("op"),
            Some("add destination 192.0.2.255:80 to TCP 192.0.2.100:80 weight 0")
        );
        assert_eq!(
            r.field("errno"),
            Some("EINVAL (Invalid argument (os error 22))")
        );
        assert_eq!(
            r.field("hint"),
            Some(
                "a tunnel destination must be a unicast address this node has a route to; ipvsadm says \"address not unicast\""
            )
        );
        assert_eq!(r.num("retry_in_s"), Some(30));
    }

    #[test]
    fn text_lines_keep_dotted_words_in_the_message() {
        // web-daemon's `web1-removed.txt`.
        let l = line("2026-12-07T13:50:00.354309Z  INFO lvstun_node::web: applied: sysctl net.ipv4.conf.eth0.arp_ignore=0").unwrap();
        assert_eq!(l.message, "applied: sysctl net.ipv4.conf.eth0.arp_ignore=0");
        assert!(l.fields.is_empty());
        let l = line("2026-12-07T13:50:00.355933Z  INFO lvstun_node::web: reconciled: writes=5 vips=0 () ready=false reason=RealServerNotFound message=no RealServer web1 in the configuration").unwrap();
        assert_eq!(l.message, "reconciled:");
        assert_eq!(l.field("vips"), Some("0 ()"));
        assert_eq!(
            l.field("message"),
            Some("no RealServer web1 in the configuration")
        );
        assert!(line("Received 0 response(s)").is_err());
        // An unquoted value holding ` key=` is cut there: the text format's own ambiguity
        // (see parse::condition for a line whose last field is known to run to its end).
        let (rest, f) = message_and_fields("TunnelReady=True reason=Ready message=a (b: all=0)");
        assert_eq!((rest, f["TunnelReady"].as_str()), ("", "True"));
        assert_eq!((f["message"].as_str(), f["all"].as_str()), ("a (b:", "0)"));
        assert!(line("").is_err());
    }

    #[test]
    fn json_lines_read_the_same_shape() {
        // A pod's balancer log (pods run `--log-format json`), as recorded...
        let l = line(r#"{"timestamp":"2026-12-07T13:42:29.322836Z","level":"INFO","fields":{"message":"health endpoint on http://0.0.0.0:9781/healthz, /readyz and /metrics"},"target":"lvstun_node::balancer::daemon"}"#).unwrap();
        assert_eq!(l.level, "INFO");
        assert_eq!(
            l.message,
            "health endpoint on http://0.0.0.0:9781/healthz, /readyz and /metrics"
        );
        assert!(l.fields.is_empty());
        // ...and with fields, which JSON keeps typed (numbers read back as their text).
        let l = line(r#"{"timestamp":"2026-12-07T13:42:29.322836Z","level":"INFO","fields":{"message":"reconciled","ops":3,"trigger":"start"},"target":"lvstun_node::balancer::run"}"#).unwrap();
        assert_eq!(l.message, "reconciled");
        assert_eq!(l.num("ops"), Some(3));
        assert_eq!(l.field("trigger"), Some("start"));
        assert_eq!(l.target, "lvstun_node::balancer::run");
        assert!(line("{\"level\":\"INFO\"}").is_err());
    }

    #[test]
    fn vrrp_transitions_are_read_from_ownership_events() {
        // balancer-vrrp's `logs/lb2.log`, abridged.
        let log = lines("\
2026-12-07T13:24:33.988327Z  INFO lvstun_node::vrrp::driver: vrrp: state changed vrid=51 from=Initialize to=Backup
2026-12-07T13:24:34.010882Z  INFO lvstun_node::balancer::owner: vip ownership changed vrid=51 vips=[192.0.2.100] from=Initialize to=Backup master=None priority=1 unix_ms=1796649874010
2026-12-07T13:26:12.976206Z  INFO lvstun_node::balancer::owner: vip ownership changed vrid=51 vips=[192.0.2.100] from=Master to=Initialize master=None priority=100 unix_ms=1796649972976
not a log line
2026-12-07T13:26:13.916038Z  INFO lvstun_node::balancer::owner: vip ownership stopped
");
        assert_eq!(log.len(), 4);
        let t = vrrp_transitions(&log);
        assert_eq!(
            t,
            [
                VrrpTransition {
                    vrid: 51,
                    from: VrrpState::Initialize,
                    to: VrrpState::Backup,
                    unix_ms: Some(1_796_649_874_010),
                },
                VrrpTransition {
                    vrid: 51,
                    from: VrrpState::Master,
                    to: VrrpState::Initialize,
                    unix_ms: Some(1_796_649_972_976),
                },
            ]
        );
    }
}
