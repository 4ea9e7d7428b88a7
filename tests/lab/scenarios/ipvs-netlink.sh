#!/usr/bin/env bash
# Lab scenario: lvstun-node's own IPVS generic-netlink layer against a real kernel, with
# ipvsadm as the witness, through the hidden `lvstun-node ipvs dump|apply|sync` commands.
# Asserted by tests/tests/lab_ipvs_netlink.rs.
#
#   run-guest.sh OUTDIR ipvs-netlink     (LVSTUN_LAB_BIN = folder of lvstun-node)
#
# Checks (each a results.txt line; any failure exits 1):
#   autoload        ip_vs is not modprobed: lvstun's first request must load it (and the schedulers)
#   witness         after the first apply, ipvsadm -Ln --tun-info shows exactly the programmed
#                   services and destinations (tunnel types, ports, flags, persistence)
#   dump_matches_ipvsadm  `lvstun-node ipvs dump [--tun-info]` prints what ipvsadm -Ln prints
#   reapply_ops     applying the same file again sends zero writes ("ops: 0")
#   weight_ops      changing one weight sends exactly one SetDest, and only that dest changes
#   foreign         a service created by ipvsadm on a VIP lvstun does not own survives every apply
#   delete_ops      dropping a service from the file sends exactly one DelService
#   traffic         requests from the client to the VIP reach both web nodes (real LVS-TUN)
#   one_by_one      the unbatched path gives the same table as the batched one
#   errno           starting the master sync daemon twice fails with EEXIST (decided by errno)
#   sync            master sync daemon shows in ipvsadm -L --daemon, and is gone after stop
#   bulk_equal      BULK_SERVICES x BULK_DESTS programmed by lvstun (batched and one by one) give
#                   the same rules (ipvsadm -Sn) as ipvsadm -R of the same set; times recorded
#   bulk_reapply    re-applying the bulk set sends zero writes
# The bulk part is a correctness check at a small size here (default 10 x 5; BULK_SERVICES=0
# skips it); the benchmark at full size is tests/bench/ (balancer-bench.sh).
set -euo pipefail
# shellcheck source=tests/lab/topology.sh
. "$LAB_DIR/topology.sh"

node="$LAB_BIN/lvstun-node"
[[ -x $node ]] || { lab_log "no $node (set LVSTUN_LAB_BIN)"; exit 2; }
failures=0
check() { # NAME OK(0/1) DETAIL
  lab_result "$1" "$([[ $2 == 0 ]] && echo ok || echo FAIL) $3"
  [[ $2 == 0 ]] || { failures=$((failures + 1)); lab_log "CHECK FAILED: $1: $3"; }
}
lvstun() { # ARTIFACT ARGS...: run lvstun-node in lb1, stdout to the artifact, returns its status
  local name="$1"
  shift
  local rc=0
  ip netns exec lb1 "$node" "$@" >"$LAB_OUT/$name" 2>>"$LAB_OUT/$name.err" || rc=$?
  return "$rc"
}
witness() { # N: ipvsadm -Ln --tun-info as witness-N.txt, ipvsadm -Sn (rules, no counters) sorted
  # as save-N.txt
  lab_artifact "witness-$1.txt" lab_exec lb1 ipvsadm -Ln --tun-info
  lab_exec lb1 ipvsadm -Sn | sort >"$LAB_OUT/save-$1.txt"
}
line_has_all() { # FILE PREFIX-GLOB SUBSTRING...: some line matches PREFIX-GLOB and has every SUBSTRING
  local file="$1" prefix="$2" l s found
  shift 2
  while IFS= read -r l; do
    # shellcheck disable=SC2053
    [[ $l == $prefix ]] || continue
    found=1
    for s in "$@"; do [[ $l == *"$s"* ]] || found=0; done
    ((found)) && return 0
  done <"$file"
  return 1
}
first_line() { local l; IFS= read -r l <"$1" || true; printf '%s' "$l"; }
has_line() { # FILE GLOB
  local l
  while IFS= read -r l; do
    # shellcheck disable=SC2053
    [[ $l == $2 ]] && return 0
  done <"$1"
  return 1
}

lab_modules ipip # web nodes need tunl0; ip_vs is deliberately NOT loaded
lab_topology_up
lab_web_prepare web1 web2
lab_web_start web1 www1
lab_web_start web2 www2
ip -n lb1 addr add "$LAB_VIP/32" dev eth0

# --- 1. module autoload through the family lookup --------------------------------------------
rc=0
lvstun dump-empty.txt ipvs dump || rc=$?
ok=0
{ [[ $rc == 0 && -d /sys/module/ip_vs ]]; } || ok=1
check autoload "$ok" "dump status $rc, ip_vs loaded: $([[ -d /sys/module/ip_vs ]] && echo yes || echo no)"

# --- 2. a foreign service, put there by another tool -----------------------------------------
FOREIGN=192.0.2.200
lab_exec lb1 ipvsadm -A -t "$FOREIGN:443" -s rr
lab_exec lb1 ipvsadm -a -t "$FOREIGN:443" -r "$LAB_WEB1_IP:443" -g -w 4

# --- 3. first apply ----------------------------------------------------------------------------
desired() { # WEB2_WEIGHT WITH_8080(0/1)
  cat <<EOF
services:
  - vip: $LAB_VIP
    port: 80
    scheduler: wrr
    destinations:
      - {address: $LAB_WEB1_IP, port: 80, weight: 1}
      - {address: $LAB_WEB2_IP, port: 80, weight: $1}
  - vip: $LAB_VIP
    port: 53
    protocol: udp
    scheduler: mh
    flags: [mh-port]
    persistence: {timeout: 300, netmask: 24}
    destinations:
      - {address: $LAB_WEB1_IP, port: 53, forward: route}
EOF
  if [[ $2 == 1 ]]; then
    cat <<EOF
  - vip: $LAB_VIP
    port: 8080
    scheduler: rr
    destinations:
      - {address: $LAB_WEB1_IP, port: 8080, tunnel: {type: gue, port: 6080, checksum: csum}}
      - {address: $LAB_WEB2_IP, port: 8080, weight: 2, tunnel: {type: gre, checksum: csum}, upper_threshold: 100, lower_threshold: 10}
EOF
  fi
}
desired 1 1 >"$LAB_OUT/desired-1.yaml"
rc=0
lvstun apply-1.txt ipvs apply "$LAB_OUT/desired-1.yaml" || rc=$?
check first_apply "$((rc != 0))" "$(first_line "$LAB_OUT/apply-1.txt") (status $rc)"
witness 1
lvstun dump-1.txt ipvs dump || true

w="$LAB_OUT/witness-1.txt"
ok=0
line_has_all "$w" "UDP  $LAB_VIP:53 mh*" mh-port "persistent 300" "mask 255.255.255.0" || {
  ok=1
  lab_log "witness lacks the mh service's flags"
}
for pat in \
  "TCP  $LAB_VIP:80 wrr*" \
  "  -> $LAB_WEB1_IP:80 *Tunnel*1 *" \
  "  -> $LAB_WEB2_IP:80 *Tunnel*1 *" \
  "  -> $LAB_WEB1_IP:53 *Route*1 *" \
  "TCP  $LAB_VIP:8080 rr*" \
  "  -> $LAB_WEB1_IP:8080 *Tunnel*gue:6080:+c*1 *" \
  "  -> $LAB_WEB2_IP:8080 *Tunnel*gre:+c*2 *" \
  "TCP  $FOREIGN:443 rr*" \
  "  -> $LAB_WEB1_IP:443 *Route*4 *"; do
  has_line "$w" "$pat" || { ok=1; lab_log "witness lacks: $pat"; }
done
check witness "$ok" "see witness-1.txt"

# lvstun's own listing equals ipvsadm's, byte for byte (trailing blanks aside), with and without
# the tunnel column: the dump path decodes what the kernel holds exactly as ipvsadm does.
lvstun dump-1-tun.txt ipvs dump --tun-info || true
lab_exec lb1 ipvsadm -Ln | sed 's/ *$//' >"$LAB_OUT/witness-1-trimmed.txt"
sed 's/ *$//' "$LAB_OUT/witness-1.txt" >"$LAB_OUT/witness-1-tun-trimmed.txt"
same=no
cmp -s "$LAB_OUT/dump-1.txt" "$LAB_OUT/witness-1-trimmed.txt" &&
  cmp -s "$LAB_OUT/dump-1-tun.txt" "$LAB_OUT/witness-1-tun-trimmed.txt" && same=yes
ok=0
{ [[ $same == yes ]]; } || ok=1
check dump_matches_ipvsadm "$ok" "ipvs dump == ipvsadm -Ln and --tun-info: $same"

# --- 4. re-apply: zero writes ------------------------------------------------------------------
rc=0
lvstun apply-2.txt ipvs apply "$LAB_OUT/desired-1.yaml" || rc=$?
ok=0
{ [[ $(first_line "$LAB_OUT/apply-2.txt") == "ops: 0" && $rc == 0 ]]; } || ok=1
check reapply_ops "$ok" "$(first_line "$LAB_OUT/apply-2.txt")"

# --- 5. one weight change: one SetDest, one dest changed ---------------------------------------
desired 3 1 >"$LAB_OUT/desired-2.yaml"
rc=0
lvstun apply-3.txt ipvs apply "$LAB_OUT/desired-2.yaml" || rc=$?
ok=0
{ [[ $(first_line "$LAB_OUT/apply-3.txt") == "ops: 1" && $rc == 0 ]] &&
  has_line "$LAB_OUT/apply-3.txt" "  edit destination $LAB_WEB2_IP:80 of TCP $LAB_VIP:80 weight 3"; } ||
  ok=1
check weight_ops "$ok" "$(first_line "$LAB_OUT/apply-3.txt")"
witness 2
# Exactly one rule differs between the saves (ipvsadm -Sn, sorted), and it is web2's :80 line.
mapfile -t before <"$LAB_OUT/save-1.txt"
mapfile -t after <"$LAB_OUT/save-2.txt"
declare -A seen=()
for l in "${before[@]}"; do seen[$l]=1; done
diffs=()
for l in "${after[@]}"; do [[ -n ${seen[$l]:-} ]] || diffs+=("$l"); done
ok=0
{ [[ ${#before[@]} == "${#after[@]}" && ${#diffs[@]} == 1 &&
  ${diffs[0]} == "-a -t $LAB_VIP:80 -r $LAB_WEB2_IP:80 -i -w 3"* ]]; } || ok=1
check weight_witness "$ok" "${#diffs[@]} changed rule(s): ${diffs[*]:-}"

# --- 6. traffic through the programmed service --------------------------------------------------
urls=()
for ((i = 0; i < 8; i++)); do urls+=("http://$LAB_VIP/"); done
lab_artifact client-curl.txt lab_exec client curl -sS -i --max-time 10 --connect-timeout 5 \
  -H 'Connection: close' "${urls[@]}" || true
ok=1
if has_line "$LAB_OUT/client-curl.txt" "*www1*" && has_line "$LAB_OUT/client-curl.txt" "*www2*"; then ok=0; fi
check traffic "$ok" "both web nodes answered through the VIP: $([[ $ok == 0 ]] && echo yes || echo no)"

# --- 7. drop a service: one DelService; the foreign one survives --------------------------------
desired 3 0 >"$LAB_OUT/desired-3.yaml"
printf 'owned: [%s]\n' "$LAB_VIP" >>"$LAB_OUT/desired-3.yaml"
rc=0
lvstun apply-4.txt ipvs apply "$LAB_OUT/desired-3.yaml" || rc=$?
ok=0
{ [[ $(first_line "$LAB_OUT/apply-4.txt") == "ops: 1" && $rc == 0 ]] &&
  has_line "$LAB_OUT/apply-4.txt" "  delete service TCP $LAB_VIP:8080"; } || ok=1
check delete_ops "$ok" "$(first_line "$LAB_OUT/apply-4.txt")"
witness 3
ok=1
if has_line "$LAB_OUT/witness-3.txt" "TCP  $FOREIGN:443 rr*" &&
  has_line "$LAB_OUT/witness-3.txt" "  -> $LAB_WEB1_IP:443 *Route*4 *" &&
  ! has_line "$LAB_OUT/witness-3.txt" "TCP  $LAB_VIP:8080*"; then ok=0; fi
check foreign "$ok" "foreign $FOREIGN:443 intact after every apply"

# --- 8. the unbatched path ----------------------------------------------------------------------
rc=0
lvstun apply-5.txt ipvs apply "$LAB_OUT/desired-1.yaml" --one-by-one || rc=$?
witness 4
same=no
cmp -s "$LAB_OUT/save-1.txt" "$LAB_OUT/save-4.txt" && same=yes
ok=0
{ [[ $rc == 0 && $(first_line "$LAB_OUT/apply-5.txt") == "ops: 4" && $same == yes ]]; } || ok=1
check one_by_one "$ok" "$(first_line "$LAB_OUT/apply-5.txt"); rules equal the first apply's: $same"

# --- 9. sync daemon, and an errno ---------------------------------------------------------------
rc=0
lvstun sync-start.txt ipvs sync start master eth0 5 || rc=$?
lab_artifact daemon-1.txt lab_exec lb1 ipvsadm -L --daemon
lvstun sync-show.txt ipvs sync show || true
ok=0
{ has_line "$LAB_OUT/daemon-1.txt" "master sync daemon (mcast=eth0, syncid=5*" &&
  has_line "$LAB_OUT/sync-show.txt" "master sync daemon (mcast=eth0, syncid=5)"; } || ok=1
check sync "$ok" "start status $rc; ipvsadm: $(first_line "$LAB_OUT/daemon-1.txt")"
rc=0
lvstun sync-again.txt ipvs sync start master eth0 5 || rc=$?
ok=0
{ [[ $rc == 2 ]] && has_line "$LAB_OUT/sync-again.txt.err" "*EEXIST*"; } || ok=1
check errno "$ok" "second start: status $rc, $(first_line "$LAB_OUT/sync-again.txt.err")"
lvstun sync-stop.txt ipvs sync stop master || true
lab_artifact daemon-2.txt lab_exec lb1 ipvsadm -L --daemon
ok=0
{ [[ ! -s $LAB_OUT/daemon-2.txt ]]; } || ok=1
check sync_stop "$ok" "after stop: '$(first_line "$LAB_OUT/daemon-2.txt")'"

# --- 10. bulk: lvstun programs exactly what ipvsadm --restore programs, and how fast -------------
# Three fresh namespaces, each with a dummy link so that the real-server addresses are unicast
# routes there. BULK_SERVICES x BULK_DESTS (defaults 10 x 5: a correctness check; the benchmark
# is tests/bench/). Times are wall-clock inside the guest: under TCG, compare them only with
# each other.
nsvc="${BULK_SERVICES:-10}"
ndst="${BULK_DESTS:-5}"
if ((nsvc == 0)); then
  lab_result failures "$failures"
  lab_log "done (bulk skipped): $failures failed check(s)"
  exit $((failures == 0 ? 0 : 1))
fi
for ns in bulk-lvstun bulk-ipvsadm bulk-one; do ip netns add "$ns"; done
lab_dummy_d0 bulk-lvstun bulk-ipvsadm bulk-one
{
  echo "services:"
  for ((i = 0; i < nsvc; i++)); do
    printf '  - vip: %s\n    port: %d\n    scheduler: wrr\n    destinations:\n' "$LAB_VIP" $((20000 + i))
    # ipvsadm forces a tunnel destination's port to the service's (TUN does not rewrite ports),
    # so the file says the same for the rules to compare equal.
    for ((j = 1; j <= ndst; j++)); do echo "      - {address: 198.51.100.$j, port: $((20000 + i))}"; done
  done
} >"$LAB_OUT/bulk.yaml"
{
  for ((i = 0; i < nsvc; i++)); do
    echo "-A -t $LAB_VIP:$((20000 + i)) -s wrr"
    for ((j = 1; j <= ndst; j++)); do echo "-a -t $LAB_VIP:$((20000 + i)) -r 198.51.100.$j -i -w 1"; done
  done
} >"$LAB_OUT/bulk.rules"
t0=$EPOCHREALTIME
rc=0
ip netns exec bulk-lvstun "$node" ipvs apply "$LAB_OUT/bulk.yaml" >"$LAB_OUT/bulk-apply.txt" 2>&1 || rc=$?
t1=$EPOCHREALTIME
ip netns exec bulk-ipvsadm ipvsadm -R <"$LAB_OUT/bulk.rules"
t2=$EPOCHREALTIME
ip netns exec bulk-one "$node" ipvs apply "$LAB_OUT/bulk.yaml" --one-by-one >"$LAB_OUT/bulk-one.txt" 2>&1 || true
t3=$EPOCHREALTIME
rc2=0
ip netns exec bulk-lvstun "$node" ipvs apply "$LAB_OUT/bulk.yaml" >"$LAB_OUT/bulk-reapply.txt" 2>&1 || rc2=$?
t4=$EPOCHREALTIME
ip netns exec bulk-lvstun ipvsadm -Sn | sort >"$LAB_OUT/bulk-save-lvstun.txt"
ip netns exec bulk-ipvsadm ipvsadm -Sn | sort >"$LAB_OUT/bulk-save-ipvsadm.txt"
ip netns exec bulk-one ipvsadm -Sn | sort >"$LAB_OUT/bulk-save-one.txt"
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%d", (b - a) * 1000 }'; }
lab_result bulk_size "$nsvc services x $ndst destinations = $((nsvc * (ndst + 1))) ops"
lab_result bulk_ms_lvstun_batched "$(ms "$t0" "$t1")"
lab_result bulk_ms_ipvsadm_restore "$(ms "$t1" "$t2")"
lab_result bulk_ms_lvstun_one_by_one "$(ms "$t2" "$t3")"
lab_result bulk_ms_lvstun_reapply "$(ms "$t3" "$t4")"
same=no
cmp -s "$LAB_OUT/bulk-save-lvstun.txt" "$LAB_OUT/bulk-save-ipvsadm.txt" &&
  cmp -s "$LAB_OUT/bulk-save-one.txt" "$LAB_OUT/bulk-save-ipvsadm.txt" && same=yes
ok=0
{ [[ $rc == 0 && $same == yes && $(first_line "$LAB_OUT/bulk-apply.txt") == "ops: $((nsvc * (ndst + 1)))" ]]; } || ok=1
check bulk_equal "$ok" "status $rc, $(first_line "$LAB_OUT/bulk-apply.txt"), rules equal ipvsadm -R's: $same"
ok=0
{ [[ $rc2 == 0 && $(first_line "$LAB_OUT/bulk-reapply.txt") == "ops: 0" ]]; } || ok=1
check bulk_reapply "$ok" "$(first_line "$LAB_OUT/bulk-reapply.txt")"

lab_result failures "$failures"
lab_log "done: $failures failed check(s)"
((failures == 0))
