//! The seed's walkthrough through real pods (issue 12): a control plane on this host that real
//! kubelets join; in the lab VM, lb1, lb2 and web1 are Kubernetes nodes (containerd, kubelet and
//! kube-proxy in each node's network namespace) that import the images built here (the pause
//! image included: nothing is pulled); the chart is installed as the README says (namespace
//! labelled for Pod Security, `helm install`, node labels, `kubectl apply -f deploy/examples/`),
//! and the operator and both node daemons run as pods of those images. web2 stays outside the
//! cluster, prepared by `lvstun-node web --config`.
//!
//! The guest script (`tests/lab/scenarios/pods.sh`) drives the data plane; the host
//! (`lvstun_tests::lab::pods`) answers its checkpoints from the API. Checked: the example's mh spreading connections over both servers with
//! direct server return, ARP for the VIP, a web server stopped and started, the IPVS sysctls in
//! force in the nodes' namespace, the Master's pod deleted under load (the VIP moves to lb2 and
//! back to the DaemonSet's new pod on lb1), the API server stopped, the Master's data link down
//! (its VIP leaves the dead link at once), and `kubectl get lvsvc,lvsrs` true at each step.
//!
//! Then the lifecycle (issue 13, ADR 0006): the API server down for 5 minutes (no VIP move and
//! no failed request, through a CPU hog at 100 ms adverts; then the Master's process killed),
//! CR churn, kube-proxy in IPVS mode beside lvstun (with and without its exclusion), a 60 s
//! split brain, both balancers cold-started, a strict `rp_filter` on web1, `helm upgrade` with
//! an upload across it, and every node as it was before the install once lvstun is gone.
//!
//! Run: `cargo test -p lvstun-tests --test lab_pods -- --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use lvstun_tests::lab::pods::{Images, PodHost, pod_log, vip_gone_at, vip_holders};
use lvstun_tests::lab::stalls;
use lvstun_tests::lab::vipwatch::parse_ts;
use lvstun_tests::lab::{self, parse};

/// The second image version `helm upgrade` moves to: the same binaries under another tag, so
/// another digest (the tag is in the image's config).
const UPGRADE_TAG: &str = concat!(env!("CARGO_PKG_VERSION"), "-upgrade");

#[test]
fn the_walkthrough_through_pods() {
    lab::ensure_built_bins(&[
        ("lvstun-node", "lvstun-node"),
        ("lvstun-operator", "lvstun-operator"),
        ("lvstun-tests", "lvstun-lab-web"),
        ("lvstun-tests", "lvstun-lab-load"),
        ("lvstun-tests", "lvstun-lab-stalls"),
    ])
    .unwrap();
    let started = Instant::now();
    let image_dir = lab::target_dir().join("lab-images");
    let built = Images::build_with_upgrade(&lab::bin_dir(), &image_dir, UPGRADE_TAG).unwrap();
    let mut host = PodHost::prepare(built).unwrap();
    host.lifecycle(UPGRADE_TAG);
    let checkpoints = host.checkpoints();
    let out = host.out.clone();
    let out_s = out.display().to_string();
    eprintln!(
        "[lab_pods] images and control plane ready in {} ms; run folder {out_s}",
        started.elapsed().as_millis()
    );
    let run = host.run(Duration::from_secs(1800));
    let findings = std::mem::take(&mut host.findings);
    let run = match run {
        Ok(run) => run,
        Err(e) => panic!(
            "the VM scenario failed: {e}\nwhat the host saw:\n{}\nfailures:\n{}",
            findings.notes.join("\n"),
            findings.failures.join("\n")
        ),
    };
    let result = |key: &str| -> String {
        run.result(key)
            .unwrap_or_else(|| panic!("no {key} in {out_s}/results.txt"))
            .to_owned()
    };
    let num = |key: &str| -> f64 {
        result(key)
            .parse()
            .unwrap_or_else(|_| panic!("{key} is not a number ({out_s})"))
    };
    eprintln!(
        "[lab_pods] nodes started in {} ms; pods ready {} ms and data plane steady {} ms after the kubelets started; VM wall {:?} s",
        result("nodes_started_ms"),
        result("pods_ready_ms"),
        result("steady_ms"),
        run.timing.get("vm_wall_s")
    );
    for (phase, at) in &host.timings {
        eprintln!(
            "[lab_pods] checkpoint {phase} answered at {} s",
            at.as_secs()
        );
    }

    assert_eq!(
        findings.answered, checkpoints,
        "checkpoints reached and answered ({out_s})"
    );

    // The daemons' health endpoints listen on loopback (the kubelet's probes) and on the
    // node's own address (scrapes), never on 0.0.0.0: the Master does not answer on its VIP.
    for (node, want) in [
        ("lb1", "127.0.0.1:9781 192.0.2.11:9781"),
        ("lb2", "127.0.0.1:9781 192.0.2.12:9781"),
        ("web1", "127.0.0.1:9782 198.51.100.10:9782"),
    ] {
        assert_eq!(
            result(&format!("listen.{node}")),
            want,
            "{node}'s daemon listens on loopback and its node address only ({out_s})"
        );
    }
    assert_eq!(
        result("health_on_vip"),
        "refused",
        "the Master's health endpoint is not reachable on the VIP ({out_s})"
    );

    // Both real servers and direct server return, through the balancer pods: the example's mh
    // hashes each connection's client port, so 12 connections reach both servers (all 12
    // hashing alike has odds of 2 in 4096).
    let nodes: Vec<String> = parse::http_responses(&run.artifact("client-curl.txt").unwrap())
        .unwrap()
        .iter()
        .map(|r| r.header("Node").unwrap_or("-").to_owned())
        .collect();
    eprintln!("[lab_pods] Node headers: {nodes:?}");
    assert_eq!(nodes.len(), 12, "{out_s}/client-curl.txt");
    for server in ["www1", "www2"] {
        assert!(
            nodes.iter().any(|n| n == server),
            "{server} answered none of the 12 connections: {nodes:?}"
        );
    }
    let stats = parse::ipvs_stats(&run.artifact("lb1-ipvs-stats.txt").unwrap()).unwrap();
    let service = stats
        .iter()
        .find(|s| s.protocol == "TCP" && s.address == "192.0.2.100:80")
        .unwrap_or_else(|| panic!("no VIP service in {out_s}/lb1-ipvs-stats.txt"));
    assert!(service.counters.in_pkts > 0, "{out_s}");
    assert_eq!(
        service.counters.out_pkts, 0,
        "direct server return: OutPkts 0"
    );
    assert_eq!(
        result("vip_mac"),
        result("lb1_mac"),
        "ARP for the VIP ({out_s})"
    );

    // The IPVS sysctls the balancer pods set are in force in the nodes' namespaces.
    for node in ["lb1", "lb2"] {
        for name in ["expire_nodest_conn", "sloppy_tcp"] {
            assert_eq!(
                result(&format!("sysctl.{node}.{name}")),
                "1",
                "net.ipv4.vs.{name} on {node}, set by its balancer pod ({out_s})"
            );
        }
    }

    // Health.
    let down = num("down_ms");
    eprintln!(
        "[lab_pods] web1 stopped -> weight 0 after {down} ms; back after {} ms",
        result("up_ms")
    );
    assert!(down <= 8000.0, "detection took {down} ms ({out_s})");
    let down_nodes: Vec<String> =
        parse::http_responses(&run.artifact("client-curl-down.txt").unwrap())
            .unwrap()
            .iter()
            .map(|r| r.header("Node").unwrap_or("-").to_owned())
            .collect();
    assert_eq!(down_nodes, ["www2"; 4], "{out_s}/client-curl-down.txt");

    // A client port reused while IPVS still holds its entry to the stopped web1 goes to web2:
    // expire_nodest_conn in force (without it the SYN goes to web1 and is reset).
    assert_ne!(
        result("portreuse.port"),
        "none",
        "no client port reached www1 ({out_s})"
    );
    assert_eq!(
        result("portreuse.after"),
        "Node: www2",
        "the reused client port reached a live server ({out_s}/lb1-conns-portreuse.txt)"
    );

    // The Master's pod deleted under load: lb2 takes the VIP, lb1's new pod takes it back.
    let failures = num("failover.failures");
    let gap = num("failover.longest_gap_ms");
    eprintln!(
        "[lab_pods] lb1's balancer pod deleted: VIP on lb2 after {} ms, back on lb1 after {} ms more; load {} requests, {failures} failed, longest gap {gap} ms",
        result("failover_ms"),
        result("back_ms"),
        result("failover.requests")
    );
    assert_eq!(
        result("failover_vip_mac"),
        result("lb2_mac"),
        "ARP moved to lb2 ({out_s})"
    );
    assert!(num("failover.ok") > 0.0, "{out_s}");
    assert_eq!(
        failures, 0.0,
        "a graceful pod deletion drops no request ({out_s})"
    );

    // The web pod and the operator's pods deleted under load: nothing dropped.
    for what in ["restart_web", "restart_operator"] {
        let requests = num(&format!("{what}.requests"));
        let failures = num(&format!("{what}.failures"));
        eprintln!(
            "[lab_pods] {what}: {requests} requests, {failures} failed, longest gap {} ms",
            result(&format!("{what}.longest_gap_ms"))
        );
        assert!(requests >= 20.0, "{what}: too few requests ({out_s})");
        assert_eq!(failures, 0.0, "{what} dropped requests ({out_s})");
    }

    // With the API server stopped, health checks still act.
    assert_eq!(
        result("apiserver_down_health"),
        "weight 0 then 1",
        "{out_s}"
    );

    // The Master's data link down, its pod and the API server fine: lb2 takes the VIP, lb1's
    // balancer drops its copy at once (it follows its link), and takes the VIP back once its
    // link and route return.
    let nicdown = vip_holders(&run, "nicdown").unwrap();
    let outage = num("linkdown.longest_gap_ms");
    eprintln!(
        "[lab_pods] lb1's data link down (100 ms adverts): VIP on lb2 after {} ms, gone from lb1 after {} ms; load {} requests, {} failed, longest gap {outage} ms; VIP holders {:?} (longest with two holders {} ms, with none {} ms)",
        result("linkdown_ms"),
        result("linkdown.lb1_vip_gone_ms"),
        result("linkdown.requests"),
        result("linkdown.failures"),
        nicdown.sequence,
        nicdown.longest_double_ms,
        nicdown.longest_none_ms
    );
    assert_eq!(
        result("linkdown_vip_mac"),
        result("lb2_mac"),
        "ARP moved to lb2 ({out_s})"
    );
    assert!(num("linkdown.ok") > 0.0, "{out_s}");
    assert!(outage < 3000.0, "outage {outage} ms ({out_s})");
    // Without the link watch the VIP stayed on the downed link until it came back.
    assert_ne!(
        result("linkdown.lb1_vip_gone_ms"),
        "none",
        "lb1 kept its VIP on the downed link ({out_s})"
    );
    // How long lb1 kept its VIP on the downed link, by its kernel's notification (the polled
    // figure above also counts the wait for lb2 and the forks of `ip` under TCG).
    let down_us = (num("linkdown.down_ms") * 1000.0) as i64;
    let gone_ms = vip_gone_at(&run, "nicdown", "lb1", down_us)
        .unwrap()
        .map(|at| (at - down_us) / 1000);
    eprintln!(
        "[lab_pods] lb1's VIP left its downed link after {gone_ms:?} ms (its kernel's notification)"
    );
    assert!(
        gone_ms.is_some_and(|ms| ms < 2000),
        "lb1's VIP left its downed link late ({out_s})"
    );
    // Back without its route to the real servers, lb1 forwards nothing: it stays Backup.
    assert_eq!(
        result("lb1_without_route"),
        "backup, VIP stays on lb2",
        "{out_s}"
    );
    assert_eq!(
        result("lb1_back_vip"),
        "lb1",
        "preempt after lb1 returns ({out_s})"
    );
    assert_eq!(
        nicdown.sequence.last().map(String::as_str),
        Some("lb1"),
        "{out_s}"
    );

    lifecycle(&run, &result, &num, &out_s);

    let demo = run.artifact("demo.txt").unwrap();
    for part in [
        "ipvsadm -L -n",
        "Node: www1",
        "kubectl get lvsvc,lvsrs",
        "kubectl get pods",
    ] {
        assert!(
            demo.contains(part),
            "the walkthrough lacks {part:?}:\n{demo}"
        );
    }
    assert!(
        findings.failures.is_empty(),
        "the API did not show what the data plane did:\n{}\n({out_s})",
        findings.failures.join("\n")
    );
}

/// The lifecycle part (issue 13): the API server's 5-minute outage (with a CPU hog at 100 ms
/// adverts and the Master killed in it), churn, kube-proxy's IPVS mode, a split brain, a cold
/// start, a strict `rp_filter`, `helm upgrade`, and the nodes as they were once lvstun is gone
/// from them.
fn lifecycle(
    run: &lab::LabRun,
    result: &dyn Fn(&str) -> String,
    num: &dyn Fn(&str) -> f64,
    out_s: &str,
) {
    let load = |what: &str| {
        format!(
            "{} requests, {} failed, longest gap {} ms",
            result(&format!("{what}.requests")),
            result(&format!("{what}.failures")),
            result(&format!("{what}.longest_gap_ms"))
        )
    };
    // The API server down for 5 minutes in steady state, 100 ms adverts, and a CPU hog of 20 s
    // on both balancers meanwhile: no VIP move, nothing failed.
    let outage = vip_holders(run, "outage").unwrap();
    eprintln!(
        "[lab_pods] API server down {} ms: steady part {}; VIP holders {:?} ({} moves, {} claims)",
        result("outage.api_down_ms"),
        load("outage"),
        outage.sequence,
        outage.moves,
        outage.claims
    );
    assert!(
        num("outage.api_down_ms") >= 300_000.0,
        "the API server was down 5 minutes ({out_s})"
    );
    // No VIP move while the API server is down, not even under the CPU hog. One exception, by
    // design and printed: lb1 standing down because none of its health checks passed (seen once,
    // about 60 s into the outage, when every client in the VM reconnects at once and both checks
    // went unanswered for 1 s): the VIP goes to lb2 and comes back with the checks, and no
    // request fails (asserted below).
    let stand_downs = pod_log(run, "after-outage", "lb1", "balancer")
        .unwrap()
        .iter()
        .filter(|l| {
            l.message
                .starts_with("vrrp: no destination in rotation on this node")
        })
        .filter(|l| {
            parse_ts(&l.timestamp).is_some_and(|at| {
                at >= (num("starve.start_ms") as i64 - 300_000) * 1000
                    && at <= num("vipwatch.outage.end_ms") as i64 * 1000
            })
        })
        .count();
    if outage.sequence != ["lb1"] {
        eprintln!(
            "[lab_pods] KNOWN: the VIP moved {} times during the outage; lb1 stood down {stand_downs} times for want of a passing health check ({out_s})",
            outage.moves
        );
    }
    assert!(
        outage.sequence == ["lb1"]
            || (stand_downs > 0 && outage.sequence.last().map(String::as_str) == Some("lb1")),
        "no VIP move while the API server is down, not even under a CPU hog, except lb1 standing down for want of a passing health check: {:?} ({out_s})",
        outage.sequence
    );
    assert_eq!(num("outage.failures"), 0.0, "{out_s}");
    // The CPU-starvation test (issue 13): two busy loops per balancer for 20 s, adverts every
    // 100 ms. What lvstun controls, asserted: the Master's realtime VRRP thread sends every
    // advertisement on time from the hog's start until one Master_Down_Interval (400 ms) after
    // its end (lb1's own "advertisement sent late" warnings, each for a gap over 1.5 intervals),
    // and, above, no VIP move and no failed request.
    //
    // A late advert is excused only when the guest's own witness explains it: one SCHED_FIFO 99
    // thread per vCPU (lvstun-lab-stalls), which nothing inside the guest can delay, woke late
    // during the gap, so a vCPU did not run at all: the host (TCG on cores shared with the
    // control plane and other work) stopped the guest, not the hog.
    //
    // Printed, not asserted: the Backup's brief claims in the hog. Runs show them with lb1
    // sending on time and lb2's timer firing on time (its log: `late_ms` 2-3,
    // `since_last_advert_ms` 328): the adverts were held up between the two namespaces, in the
    // guest kernel's packet delivery under starvation, which neither balancer controls. lb1
    // keeps the VIP through them (the holder sequence above) and no request fails.
    let hog_us = |key: &str| (num(key) * 1000.0) as i64;
    let (hog_from, hog_to) = (hog_us("starve.start_ms"), hog_us("starve.end_ms") + 400_000);
    let witness = stalls::parse(&run.artifact("logs/stalls.log").unwrap());
    assert_eq!(
        witness.watched.len(),
        2,
        "the stall witness watched both vCPUs ({out_s}/logs/stalls.log)"
    );
    // lb1's own account of the outage: adverts it sent later than 1.5 intervals after the one
    // before (the VRRP driver's warning), i.e. times its SCHED_RR thread did not run at all.
    let outage_from = hog_from - 300_000_000;
    let late: Vec<(i64, u64)> = pod_log(run, "after-outage", "lb1", "balancer")
        .unwrap()
        .iter()
        .filter(|l| l.message == "vrrp: advertisement sent late")
        .filter_map(|l| Some((parse_ts(&l.timestamp)?, l.num("gap_ms")?)))
        .filter(|(at, _)| *at >= outage_from)
        .collect();
    let late_in_hog: Vec<(i64, u64)> = late
        .iter()
        .copied()
        .filter(|(at, _)| (hog_from..=hog_to).contains(at))
        .collect();
    let unexplained_late: Vec<u64> = late_in_hog
        .iter()
        .filter(|(at, gap)| witness.explaining(*at, *gap as i64, 50).is_none())
        .map(|(_, gap)| *gap)
        .collect();
    let claims_in_hog: Vec<i64> = outage
        .claims_at_us
        .iter()
        .copied()
        .filter(|at| (hog_from..=hog_to).contains(at))
        .collect();
    let claims_by_stall = claims_in_hog
        .iter()
        .filter(|at| witness.explaining(**at, 400, 100).is_some())
        .count();
    let in_hog = claims_in_hog.len();
    eprintln!(
        "[lab_pods] CPU hog on both balancers for {} ms at 100 ms adverts: lb1 sent {} adverts late ({} not explained by a vCPU stall); {in_hog} brief Backup claims ({claims_by_stall} during a vCPU stall, the rest with adverts held up in the guest kernel); the whole outage: {} claims, {} late adverts (longest gap {} ms); the witness saw {} vCPU stalls over 50 ms (longest {} ms)",
        num("starve.end_ms") - num("starve.start_ms"),
        late_in_hog.len(),
        unexplained_late.len(),
        outage.claims,
        late.len(),
        late.iter().map(|(_, gap)| *gap).max().unwrap_or(0),
        witness.stalls.len(),
        witness.longest_ms()
    );
    assert_eq!(
        unexplained_late,
        Vec::<u64>::new(),
        "lb1's realtime VRRP thread sent adverts late (gaps in ms) under the CPU hog, and no vCPU stall explains it ({out_s})"
    );
    // Printed, not asserted: outside the hog, lb2 still claims the VIP beside lb1 for 50-500 ms
    // at a time, in bursts (most often about 60 s after the API server stopped, when every
    // kubelet, kube-proxy and daemon in the VM reconnects at once); lb1 keeps it and no request
    // fails. Each burst comes with lb1's own "advertisement sent late" warnings (gaps of
    // 150-460 ms at 100 ms adverts): lb1's real-time thread was not running, because the guest
    // itself was not (2 emulated vCPUs on 2 shared host cores; the busy loops above, inside the
    // guest, cause none). The user guide's VRRP timing section says what this means for
    // advert intervals on hosts with CPU steal.
    if outage.claims > in_hog {
        eprintln!(
            "[lab_pods] KNOWN: {} brief claims by lb2 outside the CPU hog, while the guest stalled ({out_s})",
            outage.claims - in_hog
        );
    }

    // lb1's balancer process killed with the API server still down: lb2 takes over, and lb1's
    // VIP goes by its kernel lifetime within the bound ADR 0002 states (at 100 ms adverts the
    // lifetime is 2 s, the bound 2 s + 1 s + 2 s/8); lb1 takes the VIP back once the API server
    // is back and its new process has read its VirtualServices.
    let crash = vip_holders(run, "crash").unwrap();
    eprintln!(
        "[lab_pods] lb1's balancer killed during the outage: lb2 held the VIP after {} ms, lb1's copy gone after {} ms (two holders for {} ms by the kernel's timestamps), lb1 back after {} ms; {}; VIP holders {:?}",
        result("crash.takeover_ms"),
        result("crash.stale_vip_ms"),
        crash.longest_double_ms,
        result("crash.back_ms"),
        load("crash"),
        crash.sequence
    );
    assert!(
        crash.longest_double_ms <= 3250,
        "the dead Master's VIP outlived it by more than the bound ({out_s})"
    );
    assert_ne!(result("crash.back_ms"), "none", "{out_s}");
    assert_eq!(
        crash.sequence.last().map(String::as_str),
        Some("lb1"),
        "{out_s}"
    );

    let churn = vip_holders(run, "churn").unwrap();
    eprintln!(
        "[lab_pods] CR churn: {}; VIP holders {:?} ({} moves)",
        load("churn"),
        churn.sequence,
        churn.moves
    );
    assert_eq!(
        num("churn.failures"),
        0.0,
        "the churn dropped requests ({out_s})"
    );
    assert_eq!(
        churn.sequence,
        ["lb1"],
        "the VIP stayed on lb1 alone through the churn ({out_s})"
    );
    // Printed, not asserted: the same brief Backup claims as in the outage (lb2 holds the VIP
    // beside lb1 for about 200 ms; lb1 keeps it, no request fails) showed in two of four full
    // runs, about 2 s after lb2's sync daemon was restarted for churn-new's router. The churn
    // itself restarts nothing (asserted above and in the host's churn checkpoint).
    if churn.claims > 0 {
        eprintln!(
            "[lab_pods] KNOWN: {} brief claims by lb2 during the churn ({out_s})",
            churn.claims
        );
    }

    // kube-proxy in IPVS mode beside lvstun on lb1 and lb2: with the exclusion the docs ask for,
    // lvstun's services survive its syncs; without it on lb2, lvstun counts the deletions (and
    // the host saw the condition and the Event at the foreign-deletion checkpoint).
    let neighbour = vip_holders(run, "neighbour").unwrap();
    eprintln!(
        "[lab_pods] kube-proxy IPVS mode: deletions counted on lb1 {} and lb2 {} with the exclusion; lb2 {} after its restart without it; lb2's table whole again: {}; {}; VIP holders {:?}",
        result("neighbour.lb1.deletions_before"),
        result("neighbour.lb2.deletions_before"),
        result("neighbour.lb2.deletions_after"),
        result("neighbour.lb2.restored"),
        load("neighbour"),
        neighbour.sequence
    );
    for node in ["lb1", "lb2"] {
        assert_eq!(
            result(&format!("neighbour.{node}.kube_ipvs0")),
            "yes",
            "kube-proxy ran in IPVS mode on {node} ({out_s})"
        );
        assert_eq!(
            result(&format!("neighbour.{node}.deletions_before")),
            "0",
            "with --ipvs-exclude-cidrs kube-proxy deleted nothing of lvstun's on {node} ({out_s})"
        );
    }
    assert!(
        num("neighbour.lb2.deletions_after") > 0.0,
        "lvstun counted kube-proxy's deletions on lb2 ({out_s})"
    );
    assert_eq!(result("neighbour.lb2.restored"), "yes", "{out_s}");
    assert_eq!(
        num("neighbour.failures"),
        0.0,
        "a Backup's services deleted cost no request ({out_s})"
    );
    assert_eq!(neighbour.sequence, ["lb1"], "{out_s}");

    // Split brain for 60 s, then healed: one holder again, and the client's ARP entry on it
    // (the Master's periodic gratuitous ARP, even when it never heard the other side).
    let bounce = vip_holders(run, "bounce").unwrap();
    eprintln!(
        "[lab_pods] balancers cut off from each other for 60 s: {}; VIP holders {:?}; one holder {} ms after the heal; the client's ARP entry on lb1 after {} ms",
        load("bounce"),
        bounce.sequence,
        result("bounce.heal_ms"),
        result("bounce.arp_ms")
    );
    assert_ne!(
        result("bounce.heal_ms"),
        "none",
        "one holder after the heal ({out_s})"
    );
    assert_eq!(
        bounce.sequence.last().map(String::as_str),
        Some("lb1"),
        "{out_s}"
    );
    assert_ne!(
        result("bounce.arp_ms"),
        "none",
        "the client's ARP entry back on lb1 ({out_s})"
    );
    assert_eq!(result("bounce_vip_mac"), result("lb1_mac"), "{out_s}");

    // Both balancer processes killed at once: both restart (the kubelet), and the election
    // ends with one holder, lb1.
    let cold = vip_holders(run, "cold").unwrap();
    let skew = (num("cold.lb1_restart_ms") - num("cold.lb2_restart_ms")).abs();
    eprintln!(
        "[lab_pods] both balancers killed: new processes after {} ms (lb1) and {} ms (lb2), {skew} ms apart; one holder after {} ms; {}; VIP holders {:?} (longest with two holders {} ms)",
        result("cold.lb1_restart_ms"),
        result("cold.lb2_restart_ms"),
        result("cold.one_holder_ms"),
        load("cold"),
        cold.sequence,
        cold.longest_double_ms
    );
    assert_ne!(
        result("cold.one_holder_ms"),
        "none",
        "one holder after a cold start ({out_s})"
    );
    assert_eq!(
        cold.sequence.last().map(String::as_str),
        Some("lb1"),
        "{out_s}"
    );

    // web1 with a strict all.rp_filter: its web pod says what to change and leaves the
    // rotation (the host saw RpFilterDrops); after the upgrade with web.vipDevice=tunl0, the
    // fix it named, web1 serves again with the strict setting in place.
    eprintln!(
        "[lab_pods] web1 all.rp_filter=1: {}; after web.vipDevice=tunl0: VIP on tunl0 {}, www1 answered {} of 12",
        load("rpfilter"),
        result("rpfilter.vip_on_tunl0"),
        result("rpfilter.www1_answers")
    );
    assert_eq!(result("rpfilter.vip_on_tunl0"), "yes", "{out_s}");
    assert!(
        num("rpfilter.www1_answers") >= 1.0,
        "web1 serves again ({out_s}/client-curl-rpfilter.txt)"
    );

    let upgrade = vip_holders(run, "upgrade").unwrap();
    eprintln!(
        "[lab_pods] helm upgrade under load: {}; VIP holders {:?} ({} moves, {} claims, longest with two holders {} ms, longest with none {} ms); upload {}",
        load("upgrade"),
        upgrade.sequence,
        upgrade.moves,
        upgrade.claims,
        upgrade.longest_double_ms,
        upgrade.longest_none_ms,
        result("upgrade.upload")
    );
    assert_eq!(
        num("upgrade.failures"),
        0.0,
        "the upgrade dropped requests ({out_s})"
    );
    // lb1's pod hands over to lb2 and its successor takes the VIP back: two moves at most.
    assert!(
        upgrade.moves <= 2,
        "VIP moves during the upgrade: {:?} ({out_s})",
        upgrade.sequence
    );
    assert_eq!(
        upgrade.sequence.last().map(String::as_str),
        Some("lb1"),
        "{out_s}"
    );
    assert_eq!(
        result("upgrade.upload"),
        "0 200 1200000",
        "an upload across the upgrade completes whole (curl exit, HTTP code, bytes the server read) ({out_s})"
    );

    for (key, what) in [
        (
            "teardown.realserver.web1",
            "web1 after its RealServer was deleted",
        ),
        (
            "teardown.deselect.lb2",
            "lb2 after its balancer label was removed",
        ),
        ("teardown.uninstall.lb1", "lb1 after helm uninstall"),
        ("teardown.uninstall.lb2", "lb2 after helm uninstall"),
        ("teardown.uninstall.web1", "web1 after helm uninstall"),
    ] {
        let diff = run
            .artifact(&format!("snapshot/{key}.diff"))
            .unwrap_or_default();
        eprintln!("[lab_pods] {what}: {}", result(key));
        assert_eq!(
            result(key),
            "same",
            "{what} is as before the install; the difference:\n{diff}\n({out_s}/snapshot)"
        );
    }
}
