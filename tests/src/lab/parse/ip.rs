//! Addresses as iproute2 lists them, typed: `ip -o addr` (one line per address, with its
//! lifetimes), `ip -br addr` (one line per device) and `ip -j addr` (JSON) all give
//! [`IfAddr`]s. Pure, no I/O.
//!
//! A check reads "lb1 holds 192.0.2.100/32 with a finite valid lifetime", not "a line has
//! `valid_lft` and no `forever`".

/// How long the kernel keeps an address (`valid_lft`/`preferred_lft`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// `forever`: the address stays until removed.
    Forever,
    /// Seconds left (`2sec`; `-j` prints a plain number).
    Secs(u64),
}

/// One address of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddr {
    /// The device's name (`eth0`, `lvstun0`).
    pub device: String,
    /// `inet` or `inet6`.
    pub family: String,
    /// The address without its prefix length.
    pub address: String,
    /// The prefix length.
    pub prefix: u8,
    /// `valid_lft`, when the listing prints it (`-o`, `-j`; not `-br`).
    pub valid_lft: Option<Lifetime>,
}

impl IfAddr {
    /// `address/prefix`, as ip prints it.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.address, self.prefix)
    }
}

fn cidr(word: &str) -> Result<(String, u8), String> {
    let (address, prefix) = word
        .split_once('/')
        .ok_or_else(|| format!("{word:?} has no prefix length"))?;
    let prefix = prefix
        .parse()
        .map_err(|_| format!("{word:?}: bad prefix length"))?;
    Ok((address.to_owned(), prefix))
}

fn lifetime(word: &str) -> Result<Lifetime, String> {
    if word == "forever" {
        return Ok(Lifetime::Forever);
    }
    word.trim_end_matches("sec")
        .parse()
        .map(Lifetime::Secs)
        .map_err(|_| format!("lifetime {word:?}"))
}

/// Parses `ip -o addr [show ...]`: `3: eth0    inet 192.0.2.100/32 scope global dynamic eth0\
/// valid_lft 2sec preferred_lft 2sec`. Lines of other families (`link/...`) are skipped.
pub fn addr_oneline(text: &str) -> Result<Vec<IfAddr>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        let [_index, device, family, address, rest @ ..] = words.as_slice() else {
            if words.is_empty() {
                continue;
            }
            return Err(at("too few columns".into()));
        };
        if !matches!(*family, "inet" | "inet6") {
            continue;
        }
        let (address, prefix) = cidr(address).map_err(at)?;
        let valid_lft = rest
            .windows(2)
            .find(|w| w[0] == "valid_lft")
            .map(|w| lifetime(w[1]))
            .transpose()
            .map_err(at)?;
        out.push(IfAddr {
            device: device.trim_end_matches(':').to_owned(),
            family: (*family).to_owned(),
            address,
            prefix,
            valid_lft,
        });
    }
    Ok(out)
}

/// Parses `ip -br addr [show ...]`: `lvstun0  UNKNOWN  192.0.2.100/32 fe80::1/64`, one
/// [`IfAddr`] per address (no lifetimes in this format; the family is read from the address).
pub fn addr_brief(text: &str) -> Result<Vec<IfAddr>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let [device, _state, addresses @ ..] = words.as_slice() else {
            if words.is_empty() {
                continue;
            }
            return Err(format!("line {}: too few columns: {line:?}", n + 1));
        };
        for word in addresses {
            let (address, prefix) = cidr(word).map_err(|e| format!("line {}: {e}", n + 1))?;
            let family = if address.contains(':') {
                "inet6"
            } else {
                "inet"
            };
            out.push(IfAddr {
                device: device.split('@').next().unwrap_or(device).to_owned(),
                family: family.to_owned(),
                address,
                prefix,
                valid_lft: None,
            });
        }
    }
    Ok(out)
}

/// Reads `ip -j addr [show ...]` (already parsed as JSON): every `addr_info` entry of every
/// device.
pub fn addr_json(json: &serde_json::Value) -> Result<Vec<IfAddr>, String> {
    let mut out = Vec::new();
    for link in json.as_array().ok_or("not a JSON array")? {
        let device = link
            .get("ifname")
            .and_then(|v| v.as_str())
            .ok_or("a link without ifname")?;
        for info in link
            .get("addr_info")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            let field = |k: &str| info.get(k).and_then(|v| v.as_str());
            let (Some(family), Some(address)) = (field("family"), field("local")) else {
                return Err(format!("{device}: an address without family or local"));
            };
            let prefix = info
                .get("prefixlen")
                .and_then(|v| v.as_u64())
                .and_then(|p| u8::try_from(p).ok())
                .ok_or_else(|| format!("{device} {address}: no prefixlen"))?;
            // iproute2 prints 4294967295 (INFINITY_LIFE_TIME) for `forever`.
            let valid_lft = info
                .get("valid_life_time")
                .and_then(|v| v.as_u64())
                .map(|s| {
                    if s == u64::from(u32::MAX) {
                        Lifetime::Forever
                    } else {
                        Lifetime::Secs(s)
                    }
                });
            out.push(IfAddr {
                device: device.to_owned(),
                family: family.to_owned(),
                address: address.to_owned(),
                prefix,
                valid_lft,
            });
        }
    }
    Ok(out)
}

/// One device's block of the multi-line `ip link`/`ip -d link`/`ip addr` listings: its header
/// (`3: tunl0@NONE: <NOARP> mtu 1480 ...`) and the indented lines under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkBlock {
    /// The device's name, without the `@peer` part.
    pub name: String,
    /// The flags between `<` and `>` (`UP`, `LOWER_UP`, `NOARP`, ...).
    pub flags: Vec<String>,
    /// The header line, then the indented ones, as printed.
    pub lines: Vec<String>,
}

impl LinkBlock {
    /// Whether the device is administratively up.
    pub fn is_up(&self) -> bool {
        self.flags.iter().any(|f| f == "UP")
    }

    /// The `inet`/`inet6` addresses listed in the block (`ip addr` only).
    pub fn addresses(&self) -> Vec<&str> {
        self.lines
            .iter()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                matches!(w.next(), Some("inet" | "inet6"))
                    .then(|| w.next())
                    .flatten()
            })
            .collect()
    }
}

/// Splits a multi-line `ip link`/`ip addr` listing into one [`LinkBlock`] per device: a line
/// that starts with a digit opens a block, the lines after it belong to it.
pub fn link_blocks<S: AsRef<str>>(lines: &[S]) -> Vec<LinkBlock> {
    let mut blocks: Vec<LinkBlock> = Vec::new();
    for line in lines {
        let line = line.as_ref();
        if line.starts_with(|c: char| c.is_ascii_digit()) {
            let name = line
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .trim_end_matches(':');
            let name = name.split('@').next().unwrap_or(name).to_owned();
            let flags = line
                .split_once('<')
                .and_then(|(_, r)| r.split_once('>'))
                .map(|(f, _)| {
                    f.split(',')
                        .filter(|f| !f.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            blocks.push(LinkBlock {
                name,
                flags,
                lines: vec![line.to_owned()],
            });
        } else if let Some(last) = blocks.last_mut() {
            last.lines.push(line.to_owned());
        }
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_blocks_read_name_flags_and_addresses() {
        // web-daemon's `snap-after-web1.txt`, section `ip addr`.
        let text = "\
1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN group default qlen 1000
    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00
    inet 127.0.0.1/8 scope host lo
       valid_lft forever preferred_lft forever
2: eth0@if3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP group default qlen 1000
    link/ether 02:00:00:64:00:0a brd ff:ff:ff:ff:ff:ff link-netns router
    inet 198.51.100.10/25 scope global eth0
       valid_lft forever preferred_lft forever
3: tunl0@NONE: <NOARP> mtu 1480 qdisc noqueue state DOWN group default qlen 1000
    link/ipip 0.0.0.0 brd 0.0.0.0
";
        let lines: Vec<&str> = text.lines().collect();
        let b = link_blocks(&lines);
        assert_eq!(b.len(), 3);
        assert_eq!((b[1].name.as_str(), b[1].is_up()), ("eth0", true));
        assert_eq!(b[1].addresses(), ["198.51.100.10/25"]);
        assert_eq!(b[2].name, "tunl0");
        assert_eq!(b[2].flags, ["NOARP"]);
        assert!(!b[2].is_up());
        assert!(b[2].addresses().is_empty());
        assert_eq!(b[2].lines.len(), 2);
    }

    /// balancer-vrrp's `addr-lb1-killed.txt`: the Master's VIP with its kernel lifetime.
    const ONELINE: &str = "\
3: eth0    inet 192.0.2.11/24 scope global eth0\\       valid_lft forever preferred_lft forever
3: eth0    inet 192.0.2.100/32 scope global dynamic eth0\\       valid_lft 2sec preferred_lft 2sec
";

    #[test]
    fn oneline_reads_address_prefix_and_lifetime() {
        let a = addr_oneline(ONELINE).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].valid_lft, Some(Lifetime::Forever));
        assert_eq!(
            a[1],
            IfAddr {
                device: "eth0".into(),
                family: "inet".into(),
                address: "192.0.2.100".into(),
                prefix: 32,
                valid_lft: Some(Lifetime::Secs(2)),
            }
        );
        assert_eq!(a[1].cidr(), "192.0.2.100/32");
        assert!(
            addr_oneline("2: eth0    inet6 fe80::1/64 scope link \\       valid_lft forever\n")
                .unwrap()[0]
                .family
                == "inet6"
        );
        assert!(addr_oneline("3: eth0 inet 192.0.2.11 scope global\n").is_err());
        assert!(addr_oneline("").unwrap().is_empty());
    }

    #[test]
    fn brief_reads_every_address_of_a_device() {
        // web-daemon's `web1-kept.txt`.
        let a = addr_brief("lvstun0          UNKNOWN        192.0.2.100/32 \n").unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(
            (a[0].device.as_str(), a[0].cidr()),
            ("lvstun0", "192.0.2.100/32".into())
        );
        let a = addr_brief("tunl0@NONE  DOWN  \neth0  UP  198.51.100.10/25 fe80::2/64 \n").unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[1].family, "inet6");
    }

    #[test]
    fn json_reads_addr_info() {
        let j = serde_json::json!([{"ifindex": 3, "ifname": "eth0", "addr_info": [
            {"family": "inet", "local": "192.0.2.100", "prefixlen": 32, "valid_life_time": 2},
            {"family": "inet", "local": "192.0.2.11", "prefixlen": 24, "valid_life_time": 4294967295u64}
        ]}, {"ifindex": 1, "ifname": "lo"}]);
        let a = addr_json(&j).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].valid_lft, Some(Lifetime::Secs(2)));
        assert_eq!(a[1].valid_lft, Some(Lifetime::Forever));
        assert!(addr_json(&serde_json::json!({})).is_err());
    }
}
