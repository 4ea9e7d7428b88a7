//! `nft list ruleset` (or `list table`) typed as rules, each with the table and chain it sits
//! in, its counter and its comment. Pure, no I/O.
//!
//! A check reads "web1's `ip lvstun_web` chain `mss_clamp` holds the clamp to 1440 and its
//! counter saw packets", not "some line contains `maxseg` and not `packets 0 `".

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftRule {
    /// The table's family (`ip`, `arp`, `inet`, ...).
    pub family: String,
    /// The table's name.
    pub table: String,
    /// The chain's name.
    pub chain: String,
    /// The rule as listed, without its counter and comment (matches, then the verdict or
    /// statements), words separated by one space.
    pub expr: String,
    /// `counter packets P bytes B`, when the rule counts.
    pub counter: Option<(u64, u64)>,
    /// `comment "..."`, unquoted.
    pub comment: Option<String>,
}

impl NftRule {
    /// Whether the rule's expression holds `words` (a run of whole words, e.g.
    /// `"tcp option maxseg size set 1440"`).
    pub fn has(&self, words: &str) -> bool {
        let want: Vec<&str> = words.split_whitespace().collect();
        let have: Vec<&str> = self.expr.split_whitespace().collect();
        !want.is_empty() && have.windows(want.len()).any(|w| w == want.as_slice())
    }

    /// Packets the counter saw (None without a counter).
    pub fn packets(&self) -> Option<u64> {
        self.counter.map(|(p, _)| p)
    }
}

/// Parses a listing: `table FAMILY NAME {`, `chain NAME {`, rule lines, and chain headers
/// (`type ... hook ...; policy ...;`), which are not rules and are skipped.
pub fn rules(text: &str) -> Result<Vec<NftRule>, String> {
    let mut out = Vec::new();
    let mut table: Option<(String, String)> = None;
    let mut chain: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        let at = |e: &str| format!("line {}: {e}: {line:?}", n + 1);
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => {}
            ["}"] => {
                if chain.take().is_none() {
                    table = None;
                }
            }
            ["table", family, name, "{"] => {
                table = Some(((*family).to_owned(), (*name).to_owned()));
            }
            ["chain", name, "{"] => chain = Some((*name).to_owned()),
            ["type", ..] | ["policy", ..] => {}
            _ => {
                let (family, table) = table.clone().ok_or_else(|| at("a rule outside a table"))?;
                let chain = chain.clone().ok_or_else(|| at("a rule outside a chain"))?;
                let (body, comment) = match line.find(" comment \"") {
                    Some(i) => {
                        let quoted = &line[i + " comment \"".len()..];
                        let comment = quoted
                            .strip_suffix('"')
                            .ok_or_else(|| at("unclosed comment"))?;
                        (&line[..i], Some(comment.to_owned()))
                    }
                    None => (line, None),
                };
                let mut counter = None;
                let mut expr = Vec::new();
                let words: Vec<&str> = body.split_whitespace().collect();
                let mut i = 0;
                while i < words.len() {
                    if let ["counter", "packets", p, "bytes", b, ..] = &words[i..] {
                        let num = |s: &str| s.parse::<u64>().map_err(|_| at("counter"));
                        counter = Some((num(p)?, num(b)?));
                        i += 5;
                    } else {
                        expr.push(words[i]);
                        i += 1;
                    }
                }
                out.push(NftRule {
                    family,
                    table,
                    chain,
                    expr: expr.join(" "),
                    counter,
                    comment,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// web-daemon's `web1-nft.txt`.
    const WEB1: &str = r#"table arp lvstun_web {
	chain input {
		type filter hook input priority filter; policy accept;
		arp daddr ip 192.0.2.100 counter packets 3 bytes 84 drop comment "lvstun: never answer ARP for VIP 192.0.2.100"
	}

	chain output {
		type filter hook output priority filter; policy accept;
		arp saddr ip 192.0.2.100 counter packets 0 bytes 0 drop comment "lvstun: never announce VIP 192.0.2.100"
	}
}
table ip lvstun_web {
	chain mss_clamp {
		type filter hook output priority mangle; policy accept;
		ip saddr 192.0.2.100 tcp flags syn / syn,rst tcp option maxseg size > 1440 counter packets 4 bytes 240 tcp option maxseg size set 1440 comment "lvstun: clamp the MSS of VIP 192.0.2.100 so tunneled segments fit"
	}
}
"#;

    #[test]
    fn rules_carry_their_table_chain_counter_and_comment() {
        let r = rules(WEB1).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(
            r[0],
            NftRule {
                family: "arp".into(),
                table: "lvstun_web".into(),
                chain: "input".into(),
                expr: "arp daddr ip 192.0.2.100 drop".into(),
                counter: Some((3, 84)),
                comment: Some("lvstun: never answer ARP for VIP 192.0.2.100".into()),
            }
        );
        assert_eq!(r[1].chain, "output");
        assert_eq!(r[1].packets(), Some(0));
        let clamp = &r[2];
        assert_eq!(
            (clamp.family.as_str(), clamp.chain.as_str()),
            ("ip", "mss_clamp")
        );
        assert!(clamp.has("tcp option maxseg size > 1440"));
        assert!(clamp.has("tcp option maxseg size set 1440"));
        assert!(!clamp.has("maxseg size set 144"));
        assert_eq!(clamp.packets(), Some(4));
    }

    #[test]
    fn rules_refuse_a_rule_outside_a_chain() {
        assert!(rules("ip saddr 1.2.3.4 drop\n").is_err());
        assert!(rules("table ip t {\n\tip saddr 1.2.3.4 drop\n}\n").is_err());
        assert!(rules("").unwrap().is_empty());
    }
}
