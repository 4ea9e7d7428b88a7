//! lvstun's own nft tables on a real server, both named [`TABLE`]:
//!
//! ```text
//! table arp lvstun_web {                  # the ARP guard: a second line behind arp_ignore/announce
//!   chain input  { type filter hook input priority filter; policy accept;
//!     arp daddr ip VIP counter drop       # never answer (nor learn from) a request for a VIP
//!   }
//!   chain output { type filter hook output priority filter; policy accept;
//!     arp saddr ip VIP counter drop       # never announce a VIP as our sender address
//!   }
//! }
//! table ip lvstun_web {                   # the MSS clamp (see web/desired.rs for why)
//!   chain mss_clamp { type filter hook output priority mangle; policy accept;
//!     ip saddr VIP tcp flags syn / syn,rst tcp option maxseg size > MSS counter tcp option maxseg size set MSS
//!   }
//! }
//! ```
//!
//! Why `nft` with JSON and not netlink: nf_tables has no netlink crate under a licence this
//! project can take (rustables is GPL-3.0), and the JSON interface is `nft`'s stable API. The
//! `nftables` crate gives the JSON its types; this module runs the `nft` binary itself (with a
//! timeout, async). The binary must exist on the node (Debian/Ubuntu: package `nftables`).
//!
//! Ownership: the two tables are lvstun's by name; nothing else in the ruleset is read into the
//! model, compared or touched. A change replaces both tables in one nft transaction (`add table`,
//! `delete table`, then the new content), so there is never a moment without the guard.
//!
//! Pure parts (rule builders, normalization of what `nft -j list ruleset` prints, the
//! transaction) are unit-tested here; the `nft` runner is proven in the lab.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration;

use nftables::expr::{
    BinaryOperation, Expression, NamedExpression, Payload, PayloadField, TcpOption,
};
use nftables::schema::{Chain, NfCmd, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::{AnonymousCounter, Counter, Mangle, Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use tokio::io::AsyncWriteExt;

use super::Host;
use crate::error::Error;

/// The name of both lvstun tables (families `arp` and `ip`).
pub const TABLE: &str = "lvstun_web";

/// The two families lvstun's tables live in.
pub const FAMILIES: [NfFamily; 2] = [NfFamily::ARP, NfFamily::IP];

/// How long one `nft` run may take.
const NFT_TIMEOUT: Duration = Duration::from_secs(20);

/// What lvstun's tables should hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuardSpec {
    /// Each VIP, with the MSS its SYN-ACKs are clamped to (`None`: no clamp).
    pub vips: BTreeMap<Ipv4Addr, Option<u16>>,
}

/// lvstun's tables as read back from the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuardState {
    /// The tables' objects, normalized (no handles, counters zeroed), in listing order.
    pub objects: Vec<NfListObject<'static>>,
    /// Something in lvstun's tables that this model does not know (a set, a map, an
    /// expression the crate cannot read): the tables then differ from any desired state.
    pub unknown: bool,
}

impl GuardState {
    /// The families in which a table named [`TABLE`] exists.
    pub fn families(&self) -> Vec<NfFamily> {
        FAMILIES
            .into_iter()
            .filter(|f| {
                self.objects
                    .iter()
                    .any(|o| matches!(o, NfListObject::Table(t) if t.family == *f))
            })
            .collect()
    }
}

/// The nft seam: read lvstun's tables, run one transaction.
#[allow(async_fn_in_trait)] // single-threaded runtime: no Send bound wanted
pub trait NftTables {
    /// lvstun's tables as the kernel has them (`nft -j list ruleset`, filtered).
    async fn read_tables(&mut self) -> Result<GuardState, Error>;
    /// Runs one transaction (`nft -j -f -`): all of it or nothing.
    async fn run_transaction(&mut self, batch: &Nftables<'static>) -> Result<(), Error>;
}

fn s(text: impl Into<String>) -> Cow<'static, str> {
    Cow::Owned(text.into())
}

fn payload(protocol: &str, field: &str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: s(protocol),
            field: s(field),
        },
    )))
}

fn mss_option() -> Expression<'static> {
    Expression::Named(NamedExpression::TcpOption(TcpOption {
        name: s("maxseg"),
        field: Some(s("size")),
    }))
}

fn matches(
    left: Expression<'static>,
    op: Operator,
    right: Expression<'static>,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn counter() -> Statement<'static> {
    Statement::Counter(Counter::Anonymous(Some(AnonymousCounter {
        packets: Some(0),
        bytes: Some(0),
    })))
}

fn base_chain(family: NfFamily, name: &str, hook: NfHook, prio: i32) -> Chain<'static> {
    Chain {
        family,
        table: s(TABLE),
        name: s(name),
        newname: None,
        handle: None,
        _type: Some(NfChainType::Filter),
        hook: Some(hook),
        prio: Some(prio),
        dev: None,
        policy: Some(NfChainPolicy::Accept),
    }
}

fn rule(
    family: NfFamily,
    chain: &str,
    expr: Vec<Statement<'static>>,
    comment: String,
) -> Rule<'static> {
    Rule {
        family,
        table: s(TABLE),
        chain: s(chain),
        expr: Cow::Owned(expr),
        handle: None,
        index: None,
        comment: Some(s(comment)),
    }
}

/// The desired objects of lvstun's tables, in the order `nft -j list ruleset` prints them
/// (per table: the table, its chains, then the rules chain by chain). Empty when there are no
/// VIPs; no `ip` table when no VIP is clamped.
pub fn desired_objects(spec: &GuardSpec) -> Vec<NfListObject<'static>> {
    let mut out = Vec::new();
    if spec.vips.is_empty() {
        return out;
    }
    let arp = NfFamily::ARP;
    out.push(NfListObject::Table(Table {
        family: arp,
        name: s(TABLE),
        handle: None,
    }));
    out.push(NfListObject::Chain(base_chain(
        arp,
        "input",
        NfHook::Input,
        0,
    )));
    out.push(NfListObject::Chain(base_chain(
        arp,
        "output",
        NfHook::Output,
        0,
    )));
    for vip in spec.vips.keys() {
        out.push(NfListObject::Rule(rule(
            arp,
            "input",
            vec![
                matches(
                    payload("arp", "daddr ip"),
                    Operator::EQ,
                    Expression::String(s(vip.to_string())),
                ),
                counter(),
                Statement::Drop(None),
            ],
            format!("lvstun: never answer ARP for VIP {vip}"),
        )));
    }
    for vip in spec.vips.keys() {
        out.push(NfListObject::Rule(rule(
            arp,
            "output",
            vec![
                matches(
                    payload("arp", "saddr ip"),
                    Operator::EQ,
                    Expression::String(s(vip.to_string())),
                ),
                counter(),
                Statement::Drop(None),
            ],
            format!("lvstun: never announce VIP {vip}"),
        )));
    }
    let clamps: Vec<(Ipv4Addr, u16)> = spec
        .vips
        .iter()
        .filter_map(|(vip, mss)| mss.map(|m| (*vip, m)))
        .collect();
    if clamps.is_empty() {
        return out;
    }
    let ip = NfFamily::IP;
    out.push(NfListObject::Table(Table {
        family: ip,
        name: s(TABLE),
        handle: None,
    }));
    // priority mangle (-150): before any filter chain sees the SYN-ACK.
    out.push(NfListObject::Chain(base_chain(
        ip,
        "mss_clamp",
        NfHook::Output,
        -150,
    )));
    for (vip, mss) in clamps {
        let syn_only = Expression::BinaryOperation(Box::new(BinaryOperation::AND(
            payload("tcp", "flags"),
            Expression::List(vec![
                Expression::String(s("syn")),
                Expression::String(s("rst")),
            ]),
        )));
        out.push(NfListObject::Rule(rule(
            ip,
            "mss_clamp",
            vec![
                matches(
                    payload("ip", "saddr"),
                    Operator::EQ,
                    Expression::String(s(vip.to_string())),
                ),
                matches(syn_only, Operator::EQ, Expression::String(s("syn"))),
                // `size > MSS`: nftables 0.6 names its operators the wrong way round
                // (`Operator::LT` is serialized as ">"); the listing test pins the JSON.
                matches(
                    mss_option(),
                    Operator::LT,
                    Expression::Number(u32::from(mss)),
                ),
                counter(),
                Statement::Mangle(Mangle {
                    key: mss_option(),
                    value: Expression::Number(u32::from(mss)),
                }),
            ],
            format!("lvstun: clamp the MSS of VIP {vip} so tunneled segments fit"),
        )));
    }
    out
}

/// Drops what changes without anyone changing the rules: handles and counter values.
fn normalize(obj: NfListObject<'static>) -> NfListObject<'static> {
    match obj {
        NfListObject::Table(mut t) => {
            t.handle = None;
            NfListObject::Table(t)
        }
        NfListObject::Chain(mut c) => {
            c.handle = None;
            NfListObject::Chain(c)
        }
        NfListObject::Rule(mut r) => {
            r.handle = None;
            r.index = None;
            let expr: Vec<Statement<'static>> = r
                .expr
                .iter()
                .cloned()
                .map(|st| match st {
                    Statement::Counter(Counter::Anonymous(_)) => counter(),
                    other => other,
                })
                .collect();
            r.expr = Cow::Owned(expr);
            NfListObject::Rule(r)
        }
        other => other,
    }
}

/// Picks lvstun's tables out of `nft -j list ruleset` output. Objects of other tables are
/// skipped before they are typed, so rules this model cannot read (kube-proxy's, a CNI's)
/// never matter.
pub fn parse_listing(json: &str) -> Result<GuardState, Error> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| Error::decode("nft -j list ruleset", e))?;
    let items = value
        .get("nftables")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| Error::decode("nft -j list ruleset", "no \"nftables\" array"))?;
    let mut state = GuardState::default();
    for item in items {
        let Some((kind, body)) = item.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        let table = match kind.as_str() {
            "table" => body.get("name"),
            _ => body.get("table"),
        };
        if table.and_then(serde_json::Value::as_str) != Some(TABLE) {
            continue;
        }
        let family = body.get("family").and_then(serde_json::Value::as_str);
        if !matches!(family, Some("arp") | Some("ip")) {
            continue;
        }
        match serde_json::from_value::<NfObject<'static>>(item.clone()) {
            Ok(NfObject::ListObject(
                obj @ (NfListObject::Table(_) | NfListObject::Chain(_) | NfListObject::Rule(_)),
            )) => state.objects.push(normalize(obj)),
            _ => state.unknown = true,
        }
    }
    Ok(state)
}

/// The one transaction that turns `current` into `desired`: for each family whose table exists
/// or is wanted, `add table` (so that the delete cannot fail) and `delete table`, then the
/// desired objects. nft applies it atomically.
pub fn transaction(current: &GuardState, desired: &[NfListObject<'static>]) -> Nftables<'static> {
    let mut cmds = Vec::new();
    let present = current.families();
    for family in FAMILIES {
        let wanted = desired
            .iter()
            .any(|o| matches!(o, NfListObject::Table(t) if t.family == family));
        if wanted || present.contains(&family) || current.unknown {
            let table = Table {
                family,
                name: s(TABLE),
                handle: None,
            };
            cmds.push(NfObject::CmdObject(NfCmd::Add(NfListObject::Table(
                table.clone(),
            ))));
            cmds.push(NfObject::CmdObject(NfCmd::Delete(NfListObject::Table(
                table,
            ))));
        }
    }
    for obj in desired {
        cmds.push(NfObject::CmdObject(NfCmd::Add(obj.clone())));
    }
    Nftables {
        objects: Cow::Owned(cmds),
    }
}

/// Runs `nft ARGS` with `stdin` as input, bounded in time; returns stdout.
async fn run_nft(
    program: &std::path::Path,
    args: &[&str],
    stdin: Option<String>,
) -> Result<String, Error> {
    let what = format!("{} {}", program.display(), args.join(" "));
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NftMissing(program.display().to_string())
        } else {
            Error::Nft {
                command: what.clone(),
                detail: e.to_string(),
            }
        }
    })?;
    let run = async {
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes()).await?;
            drop(pipe);
        }
        child.wait_with_output().await
    };
    let output = tokio::time::timeout(NFT_TIMEOUT, run)
        .await
        .map_err(|_| Error::Timeout(what.clone()))?
        .map_err(|e| Error::Nft {
            command: what.clone(),
            detail: e.to_string(),
        })?;
    if !output.status.success() {
        return Err(Error::Nft {
            command: what,
            detail: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    String::from_utf8(output.stdout).map_err(|e| Error::decode("nft output", e))
}

impl NftTables for Host {
    async fn read_tables(&mut self) -> Result<GuardState, Error> {
        let json = run_nft(&self.nft, &["-j", "list", "ruleset"], None).await?;
        parse_listing(&json)
    }

    async fn run_transaction(&mut self, batch: &Nftables<'static>) -> Result<(), Error> {
        let json = serde_json::to_string(batch).map_err(|e| Error::decode("nft batch", e))?;
        run_nft(&self.nft, &["-j", "-f", "-"], Some(json))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `nft -j list ruleset` printed (nft 1.0.6) after loading the ruleset of the module
    /// comment for one VIP, with another table beside it; counters and handles as the kernel
    /// had them.
    const LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
 {"table": {"family": "inet", "name": "kube-proxy", "handle": 9}},
 {"rule": {"family": "inet", "table": "kube-proxy", "chain": "x", "handle": 2, "expr": [{"weird-future-expr": {"a": 1}}]}},
 {"table": {"family": "arp", "name": "lvstun_web", "handle": 1}},
 {"chain": {"family": "arp", "table": "lvstun_web", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}},
 {"chain": {"family": "arp", "table": "lvstun_web", "name": "output", "handle": 2, "type": "filter", "hook": "output", "prio": 0, "policy": "accept"}},
 {"rule": {"family": "arp", "table": "lvstun_web", "chain": "input", "handle": 3, "comment": "lvstun: never answer ARP for VIP 192.0.2.100", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "arp", "field": "daddr ip"}}, "right": "192.0.2.100"}}, {"counter": {"packets": 5, "bytes": 140}}, {"drop": null}]}},
 {"rule": {"family": "arp", "table": "lvstun_web", "chain": "output", "handle": 4, "comment": "lvstun: never announce VIP 192.0.2.100", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "arp", "field": "saddr ip"}}, "right": "192.0.2.100"}}, {"counter": {"packets": 0, "bytes": 0}}, {"drop": null}]}},
 {"table": {"family": "ip", "name": "lvstun_web", "handle": 2}},
 {"chain": {"family": "ip", "table": "lvstun_web", "name": "mss_clamp", "handle": 1, "type": "filter", "hook": "output", "prio": -150, "policy": "accept"}},
 {"rule": {"family": "ip", "table": "lvstun_web", "chain": "mss_clamp", "handle": 2, "comment": "lvstun: clamp the MSS of VIP 192.0.2.100 so tunneled segments fit", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "192.0.2.100"}}, {"match": {"op": "==", "left": {"&": [{"payload": {"protocol": "tcp", "field": "flags"}}, ["syn", "rst"]]}, "right": "syn"}}, {"match": {"op": ">", "left": {"tcp option": {"name": "maxseg", "field": "size"}}, "right": 1440}}, {"counter": {"packets": 12, "bytes": 720}}, {"mangle": {"key": {"tcp option": {"name": "maxseg", "field": "size"}}, "value": 1440}}]}}
]}"#;

    fn one_vip(mss: Option<u16>) -> GuardSpec {
        GuardSpec {
            vips: [("192.0.2.100".parse().unwrap(), mss)].into(),
        }
    }

    #[test]
    fn listing_of_our_tables_equals_the_desired_objects() {
        let state = parse_listing(LISTING).unwrap();
        assert!(!state.unknown, "{state:?}");
        assert_eq!(state.objects, desired_objects(&one_vip(Some(1440))));
        assert_eq!(state.families(), vec![NfFamily::ARP, NfFamily::IP]);
        let json = serde_json::to_string(&desired_objects(&one_vip(Some(1440)))).unwrap();
        assert!(json.contains(r#""op":">""#), "{json}");
    }

    #[test]
    fn a_different_mss_or_no_clamp_differs() {
        let state = parse_listing(LISTING).unwrap();
        assert_ne!(state.objects, desired_objects(&one_vip(Some(1400))));
        let no_clamp = desired_objects(&one_vip(None));
        assert_ne!(state.objects, no_clamp);
        assert!(
            no_clamp
                .iter()
                .all(|o| !matches!(o, NfListObject::Table(t) if t.family == NfFamily::IP))
        );
    }

    #[test]
    fn no_vips_means_no_tables() {
        assert!(desired_objects(&GuardSpec::default()).is_empty());
        assert_eq!(
            parse_listing(r#"{"nftables": []}"#).unwrap(),
            GuardState::default()
        );
    }

    #[test]
    fn unknown_objects_in_our_table_are_flagged() {
        let json = r#"{"nftables": [{"table": {"family": "arp", "name": "lvstun_web", "handle": 1}},
            {"set": {"family": "arp", "table": "lvstun_web", "name": "x", "type": "ipv4_addr", "handle": 2}}]}"#;
        let state = parse_listing(json).unwrap();
        assert!(state.unknown);
    }

    #[test]
    fn transaction_replaces_only_our_tables_atomically() {
        let current = parse_listing(LISTING).unwrap();
        let batch = transaction(&current, &desired_objects(&one_vip(None)));
        let json = serde_json::to_value(&batch).unwrap();
        let cmds = json["nftables"].as_array().unwrap();
        // add+delete per existing family (arp, ip), then table arp, 2 chains, 2 rules.
        assert_eq!(cmds.len(), 4 + 5);
        assert_eq!(cmds[0]["add"]["table"]["family"], "arp");
        assert_eq!(cmds[1]["delete"]["table"]["family"], "arp");
        assert_eq!(cmds[3]["delete"]["table"]["family"], "ip");
        assert!(cmds.iter().all(|c| c.to_string().contains("lvstun_web")));
        // Removing everything: only the deletes.
        let batch = transaction(&current, &[]);
        assert_eq!(batch.objects.len(), 4);
    }
}
