//! Who held the VIP, and when: the fold of the kernel's address notifications that
//! `lab_vip_watch_start` records in the lab (`ip -ts monitor address dev eth0` in each balancer
//! namespace). Pure: text in, a typed [`Holders`] timeline out, so a lab test can say "exactly
//! one holder from takeover on" and "no VIP moved" as checks over numbers, not log lines.
//!
//! A line of `ip -ts monitor address` looks like
//! `[2026-12-07T01:08:07.873299] 3: eth0    inet 192.0.2.100/32 scope global dynamic eth0`,
//! with `Deleted ` before the index when the address went (removed, or its lifetime ran out).
//! An add of an address already there (the lifetime renewals the Master sends) changes nothing.

use std::collections::BTreeMap;

/// One address event of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddrEvent {
    /// Microseconds since the Unix epoch (the guest's clock, as `ip -ts` prints it).
    pub at_us: i64,
    /// Which node's namespace.
    pub node: String,
    /// Added (or renewed) when true, deleted when false.
    pub present: bool,
}

/// The VIP's holders over a watch, folded from every node's events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holders {
    /// Times the sole holder changed to another node (a takeover, a handover, a failback).
    pub moves: usize,
    /// Times a node that did not hold the VIP added it: every VRRP transition to Master, the
    /// brief ones a Master's next advertisement undoes included (those leave `moves` alone,
    /// showing only as two holders for a while).
    pub claims: usize,
    /// When each claim happened (µs since the epoch, the guest's clock), in order: to tell the
    /// claims made during one part of a watch (a CPU hog) from the rest.
    pub claims_at_us: Vec<i64>,
    /// The sole holders in order, starting with the initial one (`-` for none).
    pub sequence: Vec<String>,
    /// Longest time two or more nodes held the VIP at once, in ms.
    pub longest_double_ms: i64,
    /// Longest time no node held it, in ms.
    pub longest_none_ms: i64,
    /// Events folded.
    pub events: usize,
}

/// Parses `[YYYY-MM-DDTHH:MM:SS.ffffff]` into microseconds since the epoch (UTC, which the lab
/// guest runs in).
pub fn parse_ts(ts: &str) -> Option<i64> {
    let (date, time) = ts.split_once('T')?;
    let mut d = date.splitn(3, '-').map(str::parse::<i64>);
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(str::parse::<i64>);
    let (h, min, s) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let micros: i64 = format!("{frac:0<6}").get(..6)?.parse().ok()?;
    Some(((days_from_civil(y, m, day) * 24 + h) * 60 + min) * 60_000_000 + s * 1_000_000 + micros)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The events about `vip` (an IPv4 address, matched as `inet VIP/32`) in one node's monitor
/// log. Lines about other addresses, and continuation lines, are skipped.
pub fn parse_events(node: &str, log: &str, vip: &str) -> Vec<AddrEvent> {
    let needle = format!("inet {vip}/32 ");
    log.lines()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| {
            // The last `[...]` before the event is its stamp (`ip` may print an empty one first).
            let head = &l[..l.find(&needle)?];
            let open = head.rfind('[')?;
            let close = open + head[open..].find(']')?;
            let at_us = parse_ts(&head[open + 1..close])?;
            Some(AddrEvent {
                at_us,
                node: node.to_owned(),
                present: !head[close..].contains("Deleted"),
            })
        })
        .collect()
}

/// `-` for no holder, the node's name for a sole one.
fn label(count: usize, sole: Option<String>) -> String {
    match (count, sole) {
        (1, Some(node)) => node,
        _ => "-".to_owned(),
    }
}

/// Folds the events of every node, from the holders at the start (`initial`: node -> held),
/// over a watch that ended at `end_us` (for the durations of the last interval).
pub fn fold(initial: &BTreeMap<String, bool>, events: &[AddrEvent], end_us: i64) -> Holders {
    let mut held: BTreeMap<String, bool> = initial.clone();
    let mut sorted: Vec<&AddrEvent> = events.iter().collect();
    sorted.sort_by_key(|e| e.at_us);
    let sole = |held: &BTreeMap<String, bool>| -> (usize, Option<String>) {
        let holders: Vec<&String> = held.iter().filter(|(_, h)| **h).map(|(n, _)| n).collect();
        (
            holders.len(),
            (holders.len() == 1).then(|| holders[0].clone()),
        )
    };
    let mut out = Holders {
        events: sorted.len(),
        ..Holders::default()
    };
    let (mut count, first) = sole(&held);
    out.sequence.push(label(count, first));
    let mut since = sorted.first().map_or(end_us, |e| e.at_us);
    let close = |count: usize, from: i64, to: i64, out: &mut Holders| {
        let ms = (to - from) / 1000;
        if count == 0 {
            out.longest_none_ms = out.longest_none_ms.max(ms);
        } else if count > 1 {
            out.longest_double_ms = out.longest_double_ms.max(ms);
        }
    };
    for e in sorted {
        if held.get(&e.node).copied().unwrap_or(false) == e.present {
            continue;
        }
        close(count, since, e.at_us, &mut out);
        if e.present {
            out.claims += 1;
            out.claims_at_us.push(e.at_us);
        }
        held.insert(e.node.clone(), e.present);
        since = e.at_us;
        let (c, h) = sole(&held);
        count = c;
        // Two holders at once is an overlap inside a move, not a holder of its own.
        if c <= 1 {
            let l = label(c, h);
            if out.sequence.last() != Some(&l) {
                out.sequence.push(l);
            }
        }
    }
    let holders: Vec<&String> = out.sequence.iter().filter(|s| *s != "-").collect();
    out.moves = holders.windows(2).filter(|w| w[0] != w[1]).count();
    close(count, since, end_us.max(since), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIP: &str = "192.0.2.100";

    fn line(ts: &str, deleted: bool) -> String {
        format!(
            "[2026-12-07T{ts}] {}3: eth0    inet 192.0.2.100/32 scope global dynamic eth0\n       valid_lft 2sec preferred_lft 2sec\n",
            if deleted { "Deleted " } else { "" }
        )
    }

    fn initial(lb1: bool, lb2: bool) -> BTreeMap<String, bool> {
        [("lb1".to_owned(), lb1), ("lb2".to_owned(), lb2)].into()
    }

    #[test]
    fn timestamps_are_microseconds_since_the_epoch() {
        assert_eq!(parse_ts("1970-01-01T00:00:01.000002"), Some(1_000_002));
        assert_eq!(
            parse_ts("2026-12-07T01:08:07.873299"),
            Some(1_796_605_687_873_299)
        );
        assert_eq!(parse_ts("garbage"), None);
    }

    #[test]
    fn events_name_the_vip_only_and_the_last_stamp() {
        let log = format!(
            "{}[2026-12-07T01:00:00.5] [2026-12-07T01:00:01.000000] 3: eth0    inet 192.0.2.12/24 scope global eth0\n{}",
            line("01:00:00.000000", false),
            line("01:00:02.000000", true)
        );
        let events = parse_events("lb2", &log, VIP);
        assert_eq!(events.len(), 2);
        assert!(events[0].present && !events[1].present);
        assert_eq!(events[1].at_us - events[0].at_us, 2_000_000);
    }

    #[test]
    fn renewals_alone_are_no_move() {
        let log = [
            line("01:00:00.000000", false),
            line("01:00:00.500000", false),
        ]
        .concat();
        let h = fold(
            &initial(true, false),
            &parse_events("lb1", &log, VIP),
            1_796_605_201_000_000,
        );
        assert_eq!(h.moves, 0);
        assert_eq!(h.sequence, ["lb1"]);
        assert_eq!((h.longest_double_ms, h.longest_none_ms), (0, 0));
    }

    #[test]
    fn a_brief_claim_under_a_live_master_is_no_move_but_a_claim() {
        // lb2 takes over while lb1 still holds the VIP (lb1 stalled), and lets go 123 ms later.
        let mut events = parse_events("lb1", &line("01:00:00.000000", false), VIP);
        events.extend(parse_events(
            "lb2",
            &[
                line("01:00:00.674000", false),
                line("01:00:00.797000", true),
            ]
            .concat(),
            VIP,
        ));
        let h = fold(
            &initial(true, false),
            &events,
            parse_ts("2026-12-07T01:00:01.0").unwrap(),
        );
        assert_eq!(h.sequence, ["lb1"]);
        assert_eq!((h.moves, h.claims), (0, 1));
        assert_eq!(
            h.claims_at_us,
            [parse_ts("2026-12-07T01:00:00.674000").unwrap()]
        );
        assert_eq!(h.longest_double_ms, 123);
    }

    #[test]
    fn a_handover_and_a_failback_are_two_moves_with_their_gaps() {
        // lb1 drops the VIP (priority 0), lb2 adds it 60 ms later; lb1 takes it back, and lb2
        // lets go 20 ms after lb1 added it.
        let mut events = parse_events(
            "lb1",
            &[
                line("01:00:01.000000", true),
                line("01:00:05.000000", false),
            ]
            .concat(),
            VIP,
        );
        events.extend(parse_events(
            "lb2",
            &[
                line("01:00:01.060000", false),
                line("01:00:05.020000", true),
            ]
            .concat(),
            VIP,
        ));
        let h = fold(
            &initial(true, false),
            &events,
            parse_ts("2026-12-07T01:00:06.0").unwrap(),
        );
        assert_eq!(h.sequence, ["lb1", "-", "lb2", "lb1"]);
        assert_eq!(h.moves, 2);
        assert_eq!(h.claims, 2);
        let at = |ts: &str| parse_ts(&format!("2026-12-07T{ts}")).unwrap();
        assert_eq!(
            h.claims_at_us,
            [at("01:00:01.060000"), at("01:00:05.000000")]
        );
        assert_eq!(h.longest_none_ms, 60);
        assert_eq!(h.longest_double_ms, 20);
        assert_eq!(h.events, 4);
    }
}
