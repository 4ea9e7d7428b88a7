#!/usr/bin/env bash
# lvstun's benchmarks, at full size, printed as one report (see tests/bench/README.md).
#
# Usage: tests/bench/run.sh [--services N] [--dests N] [--targets N] [--seconds S]
#                           [--vrrp-runs N] [--operator-n N] [--operator-servers S]
#                           [--skip-vm] [--skip-health] [--skip-vrrp] [--skip-operator]
#   --services/--dests  size of the IPVS set in the lab VM (default 1000 x 100)
#   --targets/--seconds health checker CPU on the host (default 500 targets for 20 s)
#   --vrrp-runs         failover runs, each lvstun and keepalived at 1 s and 100 ms (default 3)
#   --operator-n/--operator-servers  the operator's burst: VirtualServices x RealServers each
#                       (default 1000 x 10; --operator-n 10000 judges the RSS target)
#
# Four parts:
#   1. in the lab VM (Debian's kernel under qemu): tests/lab/scenarios/balancer-bench.sh
#      programs SERVICES x DESTS from empty with lvstun's applier and with ipvsadm -R, changes
#      1 % of the destinations with both, re-applies with nothing to change, then runs the
#      balancer daemon at that size (first pass, convergence, the 1 % change, a no-op resync,
#      peak RSS);
#   2. on the host: the health checker with TARGETS real servers (loopback listeners on
#      127.0.x.y) checked every second, its CPU time measured over SECONDS;
#   3. in the lab VM: VIP failover (tests/lab/scenarios/vrrp-failover.sh) VRRP_RUNS times: the
#      client-observed outage when the Master dies hard, lvstun and keepalived side by side at
#      advertisement intervals of 1 s and 100 ms; min / median / max of each and the ratio of
#      medians (one long-lived load process, a request every 10 ms, each stamped);
#   4. on the host: the operator against a local kube-apiserver + etcd (operator-bench): a burst
#      of N VirtualServices x S RealServers, its reconcile p99, status writes per object and
#      peak RSS, beside the API server's floor (the same burst without the operator, one bare
#      server-side apply of the operator's status per VirtualService, timed).
# Not part of the test suite (shared machines are noisy); ./dev bench runs it. Needs root.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
services=1000
dests=100
targets=500
seconds=20
vrrp_runs=3
run_vm=1
run_health=1
run_vrrp=1
run_operator=1
operator_n=1000
operator_servers=10
while (($#)); do
  case "$1" in
    --services) services="$2"; shift 2 ;;
    --dests) dests="$2"; shift 2 ;;
    --targets) targets="$2"; shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --vrrp-runs) vrrp_runs="$2"; shift 2 ;;
    --skip-vrrp) run_vrrp=0; shift ;;
    --skip-vm) run_vm=0; shift ;;
    --skip-health) run_health=0; shift ;;
    --skip-operator) run_operator=0; shift ;;
    --operator-n) operator_n="$2"; shift 2 ;;
    --operator-servers) operator_servers="$2"; shift 2 ;;
    -h | --help) sed -n '2,31p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench: unknown argument $1" >&2; exit 2 ;;
  esac
done
target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
[[ $target_dir == /* ]] || target_dir="$ROOT/$target_dir"
log() { printf '[bench] %s\n' "$*" >&2; }

log "building release binaries"
cargo build --release -q -p lvstun-node -p lvstun-tests --bin lvstun-node --bin lvstun-lab-web \
  --bin lvstun-lab-load --bin operator-bench
if ! [[ $vrrp_runs =~ ^[0-9]+$ ]] || ((vrrp_runs < 1 || vrrp_runs > 20)); then
  echo "bench: --vrrp-runs must be 1..20" >&2
  exit 2
fi

declare -A R=()
num() { printf '%s' "${R[$1]:-?}"; }
# The value of key=VALUE inside a daemon log line.
field() {
  local w
  for w in $1; do
    [[ $w == "$2="* ]] && { printf '%s' "${w#*=}"; return 0; }
  done
  printf '?'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "?" }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", 100 * a / b; else print "?" }'; }
verdict() { # OK(0/1) TEXT
  if [[ $1 == 0 ]]; then printf 'met   %s' "$2"; else printf 'MISSED %s' "$2"; fi
}

if ((run_vm)); then
  stamp="$(date -u +%Y%m%d-%H%M%S)"
  out="$target_dir/bench-runs/balancer-$stamp"
  mkdir -p "$out"
  log "lab VM: $services services x $dests destinations (results in $out)"
  LVSTUN_LAB_BIN="$target_dir/release" bash tests/lab/run-guest.sh --timeout 3600 \
    --env "BENCH_SERVICES=$services" --env "BENCH_DESTS=$dests" "$out" balancer-bench
  while IFS= read -r line; do
    [[ $line == *=* ]] && R[${line%%=*}]="${line#*=}"
  done <"$out/results.txt"
fi

if ((run_health)); then
  log "host: health checker, $targets targets every second for $seconds s"
  while IFS= read -r line; do
    [[ $line == health_*=* ]] && R[${line%%=*}]="${line#*=}"
  done < <(LVSTUN_BENCH_TARGETS="$targets" LVSTUN_BENCH_SECONDS="$seconds" \
    cargo test --release -q -p lvstun-node --lib -- --ignored --nocapture \
    --exact health::checker::bench::health_cpu_with_many_targets 2>/dev/null)
fi

declare -A V=() # outage_ms.<impl>-<advert> -> space-separated samples
if ((run_vrrp)); then
  for ((run = 1; run <= vrrp_runs; run++)); do
    stamp="$(date -u +%Y%m%d-%H%M%S)"
    out="$target_dir/bench-runs/vrrp-$stamp-$run"
    mkdir -p "$out"
    log "lab VM: VIP failover run $run of $vrrp_runs, lvstun and keepalived at 1 s and 100 ms (results in $out)"
    if ! LVSTUN_LAB_BIN="$target_dir/release" bash tests/lab/run-guest.sh --timeout 900 \
      --env VRRP_PREEMPT_CHECKS=0 "$out" vrrp-failover; then
      log "run $run failed (see $out); its samples are left out"
      continue
    fi
    while IFS= read -r line; do
      [[ $line == outage_ms.*=* ]] && V[${line%%=*}]+="${line#*=} "
    done <"$out/results.txt"
    # The load's resolution: the median gap between two successful requests' send times.
    for stamps in "$out"/load-*.txt; do
      V[resolution]+="$(awk '!/^#/ && $3 == 200 { if (p != "") print $2 - p; p = $2 }' "$stamps" |
        sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int(NR / 2) + 1] }') "
    done
  done
fi
declare -a OPERATOR_LINES=()
if ((run_operator)); then
  log "host: operator burst, $operator_n VirtualServices x $operator_servers RealServers, then the API server's floor"
  while IFS= read -r line; do
    if [[ $line == operator_*=* ]]; then
      R[${line%%=*}]="${line#*=}"
    elif [[ -n $line && $line != targets* && $line != "  met"* && $line != "  MISSED"* && $line != "  (not judged"* ]]; then
      OPERATOR_LINES+=("$line")
    fi
  done < <("$target_dir/release/operator-bench" --n "$operator_n" --servers "$operator_servers" || true)
fi
# stats SAMPLES...: "min median max n" (median of an even count: the mean of the middle two).
stats() {
  (($#)) || { echo "? ? ? 0"; return; }
  printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.0f %.0f %.0f %d\n", v[1], m, v[NR], NR }'
}

echo
echo "lvstun benchmark report ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs, $(uname -r) host)"
if ((run_vm)); then
  full_l=$(num applier_ms.lvstun_full)
  full_i=$(num applier_ms.ipvsadm_full)
  change_l=$(num applier_ms.lvstun_change)
  change_i=$(num applier_ms.ipvsadm_change)
  noop_l=$(num applier_ms.lvstun_noop)
  r_full=$(ratio "$full_l" "$full_i")
  # The 1 % target compares the daemon's change pass with its first pass from empty (both
  # in-process); the CLI rows include a full read-back of the table and are shown as such.
  r_change=$(pct "$(field "${R[daemon.change_pass]:-}" elapsed_ms)" "$(field "${R[daemon.start_pass]:-}" elapsed_ms)")
  noop_ops=$(num applier.noop_ops)
  start_pass=${R[daemon.start_pass]:-}
  change_pass=${R[daemon.change_pass]:-}
  resync_pass=${R[daemon.resync_pass]:-}
  hwm=$(num daemon.VmHWM)
  hwm_mib=$(awk -v k="$hwm" 'BEGIN { printf "%.1f", k / 1024 }')
  resync_ops=$(field "$resync_pass" ops)
  cat <<EOF

IPVS programming in the lab VM (Debian 6.1 kernel under TCG emulation: compare rows with each
other, not with hardware), $(num bench.size) = $(num bench.destinations) destinations
  process start alone                 lvstun-node $(num bench.start_ms_lvstun) ms   ipvsadm $(num bench.start_ms_ipvsadm) ms

  whole processes, parsing included   lvstun-node ipvs apply    ipvsadm -R
  program from empty                  $(printf '%8s' "$full_l") ms            $(printf '%8s' "$full_i") ms     ratio lvstun/ipvsadm $r_full
  change 1 % of destinations          $(printf '%8s' "$change_l") ms            $(printf '%8s' "$change_i") ms     ($(num applier.change_ops))
  no-op re-apply                      $(printf '%8s' "$noop_l") ms  ($noop_ops)
  dump the table (lvstun ipvs dump)   $(printf '%8s' "$(num applier_ms.lvstun_dump)") ms
  same rules as ipvsadm (ipvsadm -Sn)  full: $(num equal.full)  after change: $(num equal.change)

  the balancer daemon (in-process pass times from its log)
  first pass from empty               $(field "$start_pass" elapsed_ms) ms, ops=$(field "$start_pass" ops) failed=$(field "$start_pass" failed)
  start to all real servers in rotation  $(num daemon.converged_ms) ms ($(num daemon.health_passes) health passes; last $(field "${R[daemon.last_health_pass]:-}" elapsed_ms) ms, ops=$(field "${R[daemon.last_health_pass]:-}" ops); left at weight 0: $(num daemon.zero_weights))
  1 % change in its file              $(field "$change_pass" elapsed_ms) ms, ops=$(field "$change_pass" ops)
  periodic resync, nothing to do      $(field "$resync_pass" elapsed_ms) ms, ops=$resync_ops (netlink writes)
  peak RSS (VmHWM)                    $hwm_mib MiB (VmRSS now $(num daemon.VmRSS) kB)
  its table equals ipvsadm's          $(num equal.daemon)

targets
  $(verdict "$(awk -v r="$r_full" 'BEGIN { print (r != "?" && r <= 1.0) ? 0 : 1 }')" "ratio lvstun/ipvsadm <= 1.0 (program from empty): $r_full")
  $(verdict "$(awk -v p="$r_change" 'BEGIN { print (p != "?" && p < 5) ? 0 : 1 }')" "1 % change < 5 % of the full time (daemon passes): $r_change %")
  $(verdict "$([[ $noop_ops == "ops: 0" && $resync_ops == 0 ]] && echo 0 || echo 1)" "no-op = 0 writes: applier '$noop_ops', daemon resync ops=$resync_ops")
  $(verdict "$(awk -v m="$hwm_mib" 'BEGIN { print (m + 0 > 0 && m < 40) ? 0 : 1 }')" "daemon peak RSS < 40 MiB: $hwm_mib MiB")
EOF
fi
if ((run_health)); then
  cpu=$(num health_cpu_percent)
  cat <<EOF

health checker on the host ($(num health_targets) loopback real servers, HTTP GET every 1 s, $(num health_seconds) s)
  checks                              $(num health_checks) ($(num health_checks_per_s)/s), healthy $(num health_healthy)/$(num health_targets)
  CPU of the checker's threads        $(num health_cpu_s) s = $cpu % of one core
  CPU of the whole test process       $(num health_process_cpu_percent) % (includes the $(num health_targets) listeners)
  $(verdict "$(awk -v c="$cpu" 'BEGIN { print (c != "?" && c < 100) ? 0 : 1 }')" "reported, % of one core: $cpu")
EOF
fi
if ((run_vrrp)); then
  cat <<EOF

VIP failover in the lab VM (Debian 6.1 kernel under TCG), lb1 killed hard (link down, SIGKILL),
client-observed outage = longest gap between two successful requests (one load process, a
request every 10 ms from 4 senders); ${vrrp_runs} run(s), each with a fresh pair
                   lvstun (min / median / max)    keepalived (min / median / max)    ratio of medians
EOF
  declare -A MED=()
  for adv in 1000 100; do
    # shellcheck disable=SC2086 # the samples are words on purpose
    read -r lmin lmed lmax ln <<<"$(stats ${V[outage_ms.lvstun-$adv]:-})"
    # shellcheck disable=SC2086
    read -r kmin kmed kmax kn <<<"$(stats ${V[outage_ms.keepalived-$adv]:-})"
    MED[l$adv]=$lmed
    MED[k$adv]=$kmed
    printf '  advert %4s ms   %5s / %5s / %5s ms (n=%s)    %5s / %5s / %5s ms (n=%s)    %s\n' \
      "$adv" "$lmin" "$lmed" "$lmax" "$ln" "$kmin" "$kmed" "$kmax" "$kn" "$(ratio "$lmed" "$kmed")"
  done
  # shellcheck disable=SC2086
  read -r _ res _ _ <<<"$(stats ${V[resolution]:-})"
  echo "  the load's resolution (median gap between two successes, over every run): $res ms"
  echo
  echo "targets"
  for adv in 1000 100; do
    # No worse = not later by more than the measurement can tell apart.
    ok=$(awk -v l="${MED[l$adv]}" -v k="${MED[k$adv]}" -v r="$res" 'BEGIN { print (l != "?" && k != "?" && r != "?" && l + 0 <= k + r) ? 0 : 1 }')
    echo "  $(verdict "$ok" "at $adv ms no worse than keepalived (medians, within the $res ms resolution): ${MED[l$adv]} ms vs ${MED[k$adv]} ms")"
  done
  ok=$(awk -v l="${MED[l100]}" 'BEGIN { print (l != "?" && l + 0 < 500) ? 0 : 1 }')
  echo "  $(verdict "$ok" "at 100 ms under 500 ms of outage (median): ${MED[l100]} ms")"
fi
if ((run_operator)); then
  p99=$(num operator_vs_p99_ms)
  floor=$(num operator_floor_p99_buckets_ms)
  writes=$(num operator_vs_writes_per_object)
  rss=$(num operator_rss_mib)
  on=$(num operator_n)
  echo
  echo "the operator against a local kube-apiserver + etcd, $on VirtualServices x $(num operator_servers) RealServers"
  printf '  %s\n' "${OPERATOR_LINES[@]}"
  echo
  echo "targets"
  echo "  $(verdict "$(awk -v p="$p99" 'BEGIN { print (p != "?" && p < 100) ? 0 : 1 }')" "VirtualService reconcile p99 < 100 ms: $p99 ms")"
  echo "  $(verdict "$(awk -v p="$p99" -v f="$floor" 'BEGIN { print (p != "?" && f != "?" && p <= f) ? 0 : 1 }')" "VirtualService reconcile p99 <= the API server's floor p99 (same buckets): $p99 ms vs $floor ms")"
  echo "  $(verdict "$(awk -v w="$writes" 'BEGIN { print (w != "?" && w <= 1.0) ? 0 : 1 }')" "at most one VirtualService status write per object in the burst: $writes")"
  if [[ $on =~ ^[0-9]+$ ]] && ((on >= 10000)); then
    echo "  $(verdict "$(awk -v r="$rss" 'BEGIN { print (r != "?" && r < 64) ? 0 : 1 }')" "operator peak RSS < 64 MiB at 10000 VirtualServices: $rss MiB")"
  else
    echo "  (not judged below 10000 VirtualServices) operator peak RSS < 64 MiB: $rss MiB"
  fi
fi
