#!/usr/bin/env bash
# A rogue host against the VRRP source allowlist (issue 15): lb1 and lb2 run `lvstun-node
# balancer --config FILE --vrrp-peers LB1,LB2` (multicast, the seed's VirtualService, VIP
# 192.0.2.100, lb1 200 / lb2 100, ADVERT_MS). A namespace `rogue` on the front segment
# (ROGUE_IP, not a peer) sends well-formed VRRPv3 advertisements for the VIP's VRID at priority
# 254, every ROGUE_INTERVAL_MS, ROGUE_COUNT of them (lvstun-lab-rogue), while one load process
# runs through it. tests/tests/lab_balancer_vrrp_rogue.rs asserts: the VIP stays on lb1, nobody
# changed state, no request failed, and both daemons counted the adverts as unknown_source.
#
# Results: rogue.sent, rogue.source, rogue.lb1_vip / rogue.lb2_vip (yes/no after the rogue),
# rogue.lb1_changes / rogue.lb2_changes ("vip ownership changed" lines after the steady state),
# load.* (the load's summary); artifacts metrics-lbN-rogue.txt, addr-lbN-rogue.txt.
set -euo pipefail
LAB_DIR="${LAB_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
# shellcheck source=tests/lab/topology.sh
. "$LAB_DIR/topology.sh"

NODE="$LAB_BIN/lvstun-node"
LOAD="$LAB_BIN/lvstun-lab-load"
ROGUE="$LAB_BIN/lvstun-lab-rogue"
ADVERT_MS="${ADVERT_MS:-100}"
ROGUE_IP="${ROGUE_IP:-192.0.2.66}"
ROGUE_INTERVAL_MS="${ROGUE_INTERVAL_MS:-100}"
ROGUE_COUNT="${ROGUE_COUNT:-30}"
LOAD_S="${LOAD_S:-8}"
CFG="$LAB_OUT/lvstun.yaml"
lab_need_bins "$NODE" "$LOAD" "$ROGUE"

metrics() { # NS TAG
  lab_artifact "metrics-$1-$2.txt" lab_exec "$1" curl -sS --max-time 5 http://127.0.0.1:9101/metrics
}
start_daemon() { # NS
  lab_bg "$1" "$1" env RUST_LOG=info "$NODE" balancer --config "$CFG" --node-name "$1" \
    --vrrp-peers "$LAB_LB1_IP,$LAB_LB2_IP" \
    --state-dir "$LAB_OUT/state-$1" --health-port 9101 --health-address 127.0.0.1
}

lab_recipe_up
lab_vrrp_pair_config "$CFG" "$ADVERT_MS"
VRID="$(sed -n 's/^ *virtualRouterID: *\([0-9]*\).*/\1/p' "$CFG" | head -n 1)"
lab_result vrid "$VRID"

# --- steady: lb1 Master, lb2 Backup ------------------------------------------------------------
start_daemon lb1
lab_wait_log lb1 '*vip ownership changed*to=Master*' 60
lab_wait_router_ready lb1
start_daemon lb2
lab_wait_log lb2 '*vip ownership changed*to=Backup*' 60
lab_wait_router_ready lb2
lab_sleep 1
lb1_before="$(lab_count_lines lb1 '*vip ownership changed*')"
lb2_before="$(lab_count_lines lb2 '*vip ownership changed*')"

# --- the rogue host joins the segment (torn down at the end of the phase) -------------------------
ip -batch - <<EOF
netns add rogue
link add fr-rogue type veth peer name eth0 netns rogue address 02:00:00:02:00:42
link set fr-rogue master front0 up
EOF
ip -n rogue -batch - <<EOF
link set lo up
addr add $ROGUE_IP/24 dev eth0
link set eth0 up
EOF

lab_bg client load "$LOAD" --url "http://$LAB_VIP/" --interval-ms 10 --workers 4 \
  --duration-s "$LOAD_S" --connect-timeout-ms 100 --timeout-ms 1000 --out "$LAB_OUT/load.txt"
lab_sleep 2
lab_bg rogue rogue "$ROGUE" --interface eth0 --vrid "$VRID" --vip "$LAB_VIP" --priority 254 \
  --interval-ms "$ROGUE_INTERVAL_MS" --count "$ROGUE_COUNT"
lab_wait_log rogue 'source=*' 60
while IFS= read -r line; do
  case "${line%%=*}" in
    sent | source) lab_result "rogue.${line%%=*}" "${line#*=}" ;;
  esac
done <"$LAB_OUT/logs/rogue.log"
# Past one Master_Down_Interval after the last rogue advert: a Backup that obeyed would have
# taken over by now.
lab_sleep 1
lab_result rogue.lb1_vip "$(lab_has_vip lb1 && echo yes || echo no)"
lab_result rogue.lb2_vip "$(lab_has_vip lb2 && echo yes || echo no)"
lab_result rogue.lb1_changes $(($(lab_count_lines lb1 '*vip ownership changed*') - lb1_before))
lab_result rogue.lb2_changes $(($(lab_count_lines lb2 '*vip ownership changed*') - lb2_before))
for lb in lb1 lb2; do
  lab_artifact "addr-$lb-rogue.txt" ip -n "$lb" -4 -o addr show dev eth0
  metrics "$lb" rogue
done

lab_wait_log load 'longest_gap_ms=*' $((LOAD_S + 60))
while IFS= read -r line; do
  case "${line%%=*}" in
    requests | ok | failures | longest_gap_ms) lab_result "load.${line%%=*}" "${line#*=}" ;;
  esac
done <"$LAB_OUT/logs/load.log"

ip netns del rogue
ip link del fr-rogue 2>/dev/null || true
