//! The classic LVS-TUN recipe, built by hand with `ipvsadm` and `ip` in the lab VM
//! (`tests/lab/scenarios/recipe-ipvsadm.sh`): the witness that the lab itself is sound before
//! the product's own daemons are measured in it.
//!
//! Needs root and a machine of the project's kind (qemu, Debian's packages): the first run
//! installs and downloads what the lab needs (`tests/lab/setup.sh`), later runs reuse the cache.
//! Run: `cargo test -p lvstun-tests --test lab_recipe -- --nocapture`
//! (`LVSTUN_LAB_REUSE_RECIPE_IPVSADM=<run folder>` re-checks a finished run without the VM).

use std::collections::BTreeSet;

use lvstun_tests::lab::{self, parse};

const VIP: &str = "192.0.2.100";
const REQUESTS: usize = 6;

#[test]
fn recipe_by_hand_round_robins_over_tunnels_with_direct_return() -> anyhow::Result<()> {
    let requests = REQUESTS.to_string();
    let run = lab::run_or_reuse_with("recipe-ipvsadm", &[("REQUESTS", &requests)], &[])?;
    let out = run.out_dir.display().to_string();
    eprintln!(
        "[lab_recipe] run folder {out}; wall {:.1}s, vm {:?}s, guest boot {:?}s, guest end {:?}s",
        run.wall.as_secs_f64(),
        run.timing.get("vm_wall_s"),
        run.timing.get("guest_boot_s"),
        run.timing.get("guest_end_s"),
    );
    assert_eq!(run.result("vip"), Some(VIP), "results.txt in {out}");
    // Precondition: both real servers answer lb1 directly (routing between the two sites).
    let health = run.artifact("healthcheck.txt")?;
    assert_eq!(
        health.lines().collect::<Vec<_>>(),
        ["OK 200", "OK 200"],
        "GET /healthcheck.html from lb1 to web1 and web2 ({out})"
    );

    // 1. Every request answered, each on its own connection, alternating between the two
    //    real servers (rr over two equal destinations).
    let curl = run.artifact("client-curl.txt")?;
    let responses = run.parsed("client-curl.txt", parse::http_responses)?;
    assert_eq!(
        responses.len(),
        REQUESTS,
        "responses in {out}/client-curl.txt"
    );
    assert!(
        responses.iter().all(|r| r.status == 200),
        "non-200 response in {out}/client-curl.txt"
    );
    let nodes: Vec<&str> = responses
        .iter()
        .map(|r| r.header("Node").unwrap_or("<no Node header>"))
        .collect();
    eprintln!("[lab_recipe] Node headers: {nodes:?}");
    let seen: BTreeSet<&str> = nodes.iter().copied().collect();
    assert_eq!(
        seen,
        BTreeSet::from(["www1", "www2"]),
        "both real servers must answer ({out})"
    );
    assert!(
        nodes.windows(2).all(|w| w[0] != w[1]),
        "Node headers must strictly alternate, got {nodes:?} ({out})"
    );
    let transfers = parse::curl_write_outs(&curl);
    let ports: BTreeSet<&str> = transfers
        .iter()
        .filter_map(|t| t.get("local_port").map(String::as_str))
        .collect();
    assert_eq!(
        ports.len(),
        REQUESTS,
        "each request must use a new connection, got {transfers:?} ({out})"
    );

    // 2. Direct server return: the balancer saw the requests but forwarded no reply.
    let stats = run.parsed("lb1-ipvs-stats.txt", parse::ipvs_stats)?;
    let service = stats
        .iter()
        .find(|s| s.protocol == "TCP" && s.address == format!("{VIP}:80"))
        .ok_or_else(|| anyhow::anyhow!("no TCP {VIP}:80 in {out}/lb1-ipvs-stats.txt"))?;
    eprintln!("[lab_recipe] lb1 IPVS {service:?}");
    assert!(
        service.counters.in_pkts > 0,
        "lb1 must have received packets for the VIP ({out})"
    );
    assert_eq!(
        service.counters.out_pkts, 0,
        "replies must bypass lb1 (direct server return) ({out})"
    );
    assert_eq!(
        service.counters.conns, REQUESTS as u64,
        "one IPVS connection per request ({out})"
    );
    assert_eq!(service.destinations.len(), 2, "{out}");
    for dest in &service.destinations {
        assert_eq!(
            dest.counters.conns,
            (REQUESTS / 2) as u64,
            "rr shares connections evenly: {dest:?} ({out})"
        );
        assert_eq!(dest.counters.out_pkts, 0, "{dest:?} ({out})");
    }

    // 3. The client reaches the VIP at lb1's MAC: lb1 answered ARP for it, nobody else did.
    let lb1_mac = parse::link_address(&run.artifact_json("lb1-link.json")?)
        .ok_or_else(|| anyhow::anyhow!("no MAC in {out}/lb1-link.json"))?;
    let vip_mac = parse::neighbour_lladdr(&run.artifact_json("client-neigh.json")?, VIP)
        .ok_or_else(|| anyhow::anyhow!("client has no neighbour entry for {VIP} ({out})"))?;
    eprintln!("[lab_recipe] client's neighbour {VIP} -> {vip_mac}; lb1 eth0 is {lb1_mac}");
    assert_eq!(vip_mac, lb1_mac, "the VIP must resolve to lb1 ({out})");
    Ok(())
}
