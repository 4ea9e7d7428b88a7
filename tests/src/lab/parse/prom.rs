//! Prometheus text exposition (what the daemons serve on `/metrics`), typed as a map from a
//! series (name and labels) to its value. Pure, no I/O.
//!
//! A check then reads "lb1's `lvstun_vrrp_state{vip, vrid=51}` is 2 (Master)", not "the page
//! contains this line": comments, label order and number formatting no longer matter.

use std::collections::BTreeMap;

/// A series' labels, by name.
pub type Labels = BTreeMap<String, String>;

/// Every sample of one exposition, keyed by (metric name, labels).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Metrics {
    /// The samples.
    pub samples: BTreeMap<(String, Labels), f64>,
}

impl Metrics {
    /// The value of `name` with exactly these labels.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels: Labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples.get(&(name.to_owned(), labels)).copied()
    }

    /// The series (of any metric) that carry label `key` with `value`.
    pub fn with_label(&self, key: &str, value: &str) -> Vec<&(String, Labels)> {
        self.samples
            .keys()
            .filter(|(_, labels)| labels.get(key).is_some_and(|v| v == value))
            .collect()
    }
}

/// Parses the text format (version 0.0.4): `# HELP`/`# TYPE` and other comments and blank
/// lines are skipped; each sample line is `name[{labels}] value [timestamp]`. A malformed
/// line is an error naming it.
pub fn metrics(text: &str) -> Result<Metrics, String> {
    let mut out = Metrics::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |e: &str| format!("line {}: {e}: {line:?}", n + 1);
        let (name, labels, rest) = match line.find(['{', ' ']) {
            Some(i) if line[i..].starts_with('{') => {
                let (labels, len) = labels(&line[i + 1..]).map_err(|e| at(&e))?;
                (&line[..i], labels, &line[i + 1 + len..])
            }
            Some(i) => (&line[..i], Labels::new(), &line[i..]),
            None => return Err(at("no value")),
        };
        let value = rest
            .split_whitespace()
            .next()
            .ok_or_else(|| at("no value"))?;
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| at("value is not a number"))?,
        };
        out.samples.insert((name.to_owned(), labels), value);
    }
    Ok(out)
}

/// Reads `k="v",k2="v2"}` (the opening brace already consumed); returns the labels and how
/// many bytes it read, the closing brace included. Values may hold `\"`, `\\` and `\n`.
fn labels(text: &str) -> Result<(Labels, usize), String> {
    let mut out = Labels::new();
    let mut chars = text.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| *c == ',' || *c == ' ').is_some() {}
        match chars.peek() {
            Some((i, '}')) => return Ok((out, i + 1)),
            None => return Err("unclosed labels".into()),
            _ => {}
        }
        let mut key = String::new();
        for (_, c) in chars.by_ref() {
            if c == '=' {
                break;
            }
            key.push(c);
        }
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(format!("label {key} has no quoted value"));
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                Some((_, '"')) => break,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("unclosed label value".into()),
                },
                Some((_, c)) => value.push(c),
                None => return Err("unclosed label value".into()),
            }
        }
        out.insert(key.trim().to_owned(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From balancer-vrrp's `metrics-lb1-steady.txt`.
    const STEADY: &str = r#"# HELP lvstun_balancer_ready 1 while /readyz says ready: the kernel's table is the desired one and the VRRP routers have warmed up.
# TYPE lvstun_balancer_ready gauge
lvstun_balancer_ready 1
# TYPE lvstun_balancer_sysctl_refused gauge
lvstun_balancer_sysctl_refused{name="net.ipv4.vs.expire_nodest_conn"} 0
lvstun_balancer_sysctl_refused{name="net.ipv4.vs.sloppy_tcp"} 0
# HELP lvstun_vrrp_state VRRP state of the VIP on this node: 0 Initialize, 1 Backup, 2 Master, 3 Fault.
# TYPE lvstun_vrrp_state gauge
lvstun_vrrp_state{vip="192.0.2.100",vrid="51"} 2
lvstun_vrrp_priority{vip="192.0.2.100",vrid="51"} 200
lvstun_vrrp_transitions_total{vip="192.0.2.100",vrid="51"} 2
"#;

    #[test]
    fn metrics_map_series_to_values() {
        let m = metrics(STEADY).unwrap();
        assert_eq!(m.samples.len(), 6);
        assert_eq!(m.get("lvstun_balancer_ready", &[]), Some(1.0));
        let vip = [("vip", "192.0.2.100"), ("vrid", "51")];
        assert_eq!(m.get("lvstun_vrrp_state", &vip), Some(2.0));
        assert_eq!(m.get("lvstun_vrrp_priority", &vip), Some(200.0));
        // Label order does not matter; a missing label does.
        let reversed = [("vrid", "51"), ("vip", "192.0.2.100")];
        assert_eq!(m.get("lvstun_vrrp_state", &reversed), Some(2.0));
        assert_eq!(m.get("lvstun_vrrp_state", &[("vrid", "51")]), None);
        assert_eq!(m.with_label("vip", "192.0.2.100").len(), 3);
        assert_eq!(
            m.get(
                "lvstun_balancer_sysctl_refused",
                &[("name", "net.ipv4.vs.sloppy_tcp")]
            ),
            Some(0.0)
        );
    }

    #[test]
    fn metrics_read_escapes_and_timestamps_and_refuse_garbage() {
        let m = metrics("x{a=\"q\\\"u,o}te\",b=\"\"} 1.5 1700000000\ny +Inf\n").unwrap();
        assert_eq!(m.get("x", &[("a", "q\"u,o}te"), ("b", "")]), Some(1.5));
        assert_eq!(m.get("y", &[]), Some(f64::INFINITY));
        assert!(metrics("x{a=\"1\" 2\n").is_err());
        assert!(metrics("x one\n").is_err());
        assert!(metrics("x\n").is_err());
        assert_eq!(metrics("# only comments\n\n").unwrap(), Metrics::default());
    }
}
