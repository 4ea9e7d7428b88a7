#!/usr/bin/env bash
# VIP failover between lb1 and lb2: lvstun's VRRP (`lvstun-node vrrp`, the real VIP owner:
# VIP on eth0 over rtnetlink, gratuitous ARP, IPVS sync daemon) against keepalived at the same
# settings, measured from the client by one long-lived load process (lvstun-lab-load).
#
#   web1, web2: prepared by hand as in recipe-ipvsadm.sh (VIP on tunl0, ARP suppressed).
#   lb1, lb2:   the same IPVS service (ipvsadm, the test's stand-in for the balancer role):
#               TCP VIP:80, rr, both web nodes as ipip tunnel destinations.
#   VRRP:       VRID 51, lb1 priority 200, lb2 150, no virtual MAC, VRRPv3 multicast.
#
# Phases (each bounded):
#   1. measure IMPL ADVERT_MS for lvstun and keepalived at 1000 ms and 100 ms: both started,
#      lb1 Master, client load running, then lb1 dies hard (eth0 down, daemon killed -9); the
#      client's longest gap between two successful requests is the outage.
#   2. after the lvstun 100 ms run (lb2 Master): lb1 comes back with preempt and takes the VIP
#      back; graceful stop of lb1 (SIGTERM: priority 0) hands over to lb2 within about
#      Skew_Time; lb1 started again with --no-preempt stays Backup.
#
# Results (results.txt): outage_ms.<impl>.<advert_ms>, ok.<...>, failures.<...>,
# takeover_ms.lvstun.<advert> (link down -> lb2's Master line), graceful_takeover_ms,
# preempt_back, no_preempt_stays_backup, mac.lb1, mac.lb2, and for each phase the client's
# neighbour entry for the VIP (neigh.<phase>). Raw output: logs/*.log, load-*.txt, neigh-*.json.
set -euo pipefail
# shellcheck source=tests/lab/topology.sh
. "$LAB_DIR/topology.sh"

NODE="$LAB_BIN/lvstun-node"
LOAD="$LAB_BIN/lvstun-lab-load"
KEEPALIVED="$(command -v keepalived || echo /usr/sbin/keepalived)"
VRID=51
PHASES="${VRRP_PHASES:-lvstun:1000 keepalived:1000 lvstun:100 keepalived:100}"
lab_need_bins "$NODE" "$LOAD"

lab_modules ip_vs ip_vs_rr ipip
lab_topology_up

lab_web_prepare web1 web2
lab_web_start web1 www1
lab_web_start web2 www2
for lb in lb1 lb2; do
  lab_exec "$lb" ipvsadm -R <<EOF
-A -t $LAB_VIP:80 -s rr
-a -t $LAB_VIP:80 -r $LAB_WEB1_IP:80 -i -w 1
-a -t $LAB_VIP:80 -r $LAB_WEB2_IP:80 -i -w 1
EOF
done
MAC_LB1="$(lab_mac lb1 eth0)"
MAC_LB2="$(lab_mac lb2 eth0)"
lab_result mac.lb1 "$MAC_LB1"
lab_result mac.lb2 "$MAC_LB2"

# master_after NAME MIN_MS: unix_ms of the first "state":"Master" line of logs/NAME.log at or
# after MIN_MS (the daemon prints its wall clock on every line).
master_after() {
  local file="$LAB_OUT/logs/$1.log" line
  while IFS= read -r line; do
    if [[ $line == *'"state":"Master"'* && $line =~ \"unix_ms\":([0-9]+) ]] &&
      ((BASH_REMATCH[1] >= $2)); then
      echo "${BASH_REMATCH[1]}"
      return 0
    fi
  done <"$file"
  return 1
}

# lb1_up: lb1's link back up. Taking a link down flushes the routes through it, so the
# default route (toward the router and the web nodes' subnets) is put back too.
lb1_up() {
  ip -n lb1 -batch - <<EOF
link set eth0 up
route replace default via $LAB_ROUTER_FRONT_IP
EOF
}

# start_lvstun NAME NS PRIORITY ADVERT_MS [FLAG...]
start_lvstun() {
  local name="$1" ns="$2" prio="$3" adv="$4"
  shift 4
  lab_bg "$ns" "$name" "$NODE" vrrp --interface eth0 --vrid "$VRID" --vip "$LAB_VIP" \
    --priority "$prio" --advert-ms "$adv" "$@"
}

# start_keepalived NAME NS PRIORITY ADVERT_MS
start_keepalived() {
  local name="$1" ns="$2" prio="$3" adv="$4" dir="$LAB_OUT/keepalived/$1"
  mkdir -p "$dir"
  local int=1
  ((adv == 1000)) || int="0.$((adv / 100))"
  cat >"$dir/keepalived.conf" <<EOF
global_defs {
  router_id $name
  vrrp_version 3
}
vrrp_instance VI {
  state BACKUP
  interface eth0
  virtual_router_id $VRID
  priority $prio
  advert_int $int
  virtual_ipaddress {
    $LAB_VIP/32 dev eth0
  }
}
EOF
  lab_bg "$ns" "$name" "$KEEPALIVED" -n -l -D -P -f "$dir/keepalived.conf" \
    -p "$dir/keepalived.pid" -r "$dir/vrrp.pid"
}

# hard_kill NAME IMPL: lb1 dies: its link goes down (no more traffic, no more adverts), then
# the daemon is killed with SIGKILL (no priority 0, VIP left behind as after a crash: for
# keepalived until removed, for lvstun until its kernel lifetime runs out).
hard_kill() {
  local name="$1" impl="$2" pid="${LAB_BG_PIDS[$1]}"
  ip -n lb1 link set eth0 down
  KILL_MS="$(lab_now_ms)"
  kill -KILL "$pid" 2>/dev/null || true
  if [[ $impl == keepalived && -f $LAB_OUT/keepalived/$name/vrrp.pid ]]; then
    kill -KILL "$(<"$LAB_OUT/keepalived/$name/vrrp.pid")" 2>/dev/null || true
  fi
  lab_stop "$name"
}

reset_lbs() {
  lb1_up
  ip -n lb1 addr del "$LAB_VIP/32" dev eth0 2>/dev/null || true
  ip -n lb2 addr del "$LAB_VIP/32" dev eth0 2>/dev/null || true
}

# measure IMPL ADVERT_MS: see the header. Leaves lb2 running as Master, lb1 down.
measure() {
  local impl="$1" adv="$2" tag="$1-$2"
  local dur=$((adv >= 1000 ? 10 : 5))
  lab_log "=== measure $impl at $adv ms"
  # lb1 first and Master before lb2 starts: no start-up race in which both claim the VIP.
  if [[ $impl == lvstun ]]; then
    start_lvstun "lb1-$tag" lb1 200 "$adv"
    lab_wait_log "lb1-$tag" '*"state":"Master"*' 20
    start_lvstun "lb2-$tag" lb2 150 "$adv"
    lab_wait_log "lb2-$tag" '*"state":"Backup"*' 20
  else
    start_keepalived "lb1-$tag" lb1 200 "$adv"
    lab_wait_log "lb1-$tag" '*Entering MASTER STATE*' 20
    start_keepalived "lb2-$tag" lb2 150 "$adv"
    lab_wait_log "lb2-$tag" '*Entering BACKUP STATE*' 20
  fi
  # lb2 hears lb1 for a few intervals before the clock starts.
  lab_sleep "$((adv >= 1000 ? 3 : 1))"
  lab_bg client "load-$tag" "$LOAD" --url "http://$LAB_VIP/" --interval-ms 10 --workers 4 \
    --duration-s "$dur" --connect-timeout-ms 100 --timeout-ms 1000 --out "$LAB_OUT/load-$tag.txt"
  lab_sleep 1.5
  lab_neigh "before-$tag"
  hard_kill "lb1-$tag" "$impl"
  lab_result kill_ms."$tag" "$KILL_MS"
  if [[ $impl == lvstun ]]; then
    lab_wait_log "lb2-$tag" '*"state":"Master"*' 20
    local master_ms
    master_ms="$(master_after "lb2-$tag" "$KILL_MS")"
    lab_result takeover_ms."$tag" "$((master_ms - KILL_MS))"
  else
    lab_wait_log "lb2-$tag" '*Entering MASTER STATE*' 20
  fi
  lab_wait_log "load-$tag" 'longest_gap_ms=*' $((dur + 30))
  lab_neigh "after-$tag"
  lab_result neigh.before."$tag" "$(lab_vip_mac "before-$tag")"
  lab_result neigh.after."$tag" "$(lab_vip_mac "after-$tag")"
  local line key
  while IFS= read -r line; do
    key="${line%%=*}"
    case "$key" in
      longest_gap_ms) lab_result outage_ms."$tag" "${line#*=}" ;;
      requests | ok | failures | gap_from_ms | gap_to_ms | start_unix_ms) lab_result "$key.$tag" "${line#*=}" ;;
      node.*) lab_result "$key.$tag" "${line#*=}" ;;
    esac
  done <"$LAB_OUT/logs/load-$tag.log"
  lab_stop "load-$tag"
  lab_log "=== $impl $adv ms: outage $(grep -h '^longest_gap_ms=' "$LAB_OUT/logs/load-$tag.log")"
}

# Phase 2, after `measure lvstun 100`: lb2 is Master, lb1 is down.
preempt_and_graceful() {
  local adv=100
  lab_log "=== preempt, graceful stop, no-preempt at $adv ms"
  lb1_up
  # 1. lb1 returns (preempt is the default): it takes the VIP back, lb2 steps down.
  start_lvstun lb1-back lb1 200 "$adv"
  lab_wait_log lb1-back '*"state":"Master"*' 20
  lab_wait_count lb2-lvstun-100 '*"state":"Backup"*' 2 10
  lab_exec client curl -sS --max-time 5 --connect-timeout 2 -o /dev/null "http://$LAB_VIP/"
  lab_neigh preempt
  lab_result preempt_back yes
  lab_result neigh.preempt "$(lab_vip_mac preempt)"
  # 2. Graceful stop of the Master: priority 0, lb2 takes over after Skew_Time.
  lab_sleep 0.5
  local term_ms master_ms
  term_ms="$(lab_now_ms)"
  lab_stop lb1-back
  lab_wait_count lb2-lvstun-100 '*"state":"Master"*' 2 10
  master_ms="$(master_after lb2-lvstun-100 "$term_ms")"
  lab_result graceful_takeover_ms "$((master_ms - term_ms))"
  # The stopped Master removed its VIP and said goodbye with priority 0.
  lab_artifact lb1-addr-after-stop.txt ip -n lb1 -4 -o addr show dev eth0
  # 3. lb1 returns without preempt: lb2 (lower priority) stays Master.
  start_lvstun lb1-nopreempt lb1 200 "$adv" --no-preempt
  lab_wait_log lb1-nopreempt '*"state":"Backup"*' 10
  lab_sleep 2
  if (($(lab_count_lines lb1-nopreempt '*"state":"Master"*') == 0)) &&
    (($(lab_count_lines lb2-lvstun-100 '*"state":"Backup"*') == 2)); then
    lab_result no_preempt_stays_backup yes
  else
    lab_result no_preempt_stays_backup no
  fi
  lab_exec client curl -sS --max-time 5 --connect-timeout 2 -o /dev/null "http://$LAB_VIP/"
  lab_neigh nopreempt
  lab_result neigh.nopreempt "$(lab_vip_mac nopreempt)"
  lab_artifact lb2-sync-daemons.txt lab_exec lb2 ipvsadm -L --daemon
  lab_stop lb1-nopreempt
}

for phase in $PHASES; do
  impl="${phase%%:*}"
  adv="${phase#*:}"
  measure "$impl" "$adv"
  if [[ $impl == lvstun && $adv == 100 && ${VRRP_PREEMPT_CHECKS:-1} == 1 ]]; then
    preempt_and_graceful
  fi
  lab_stop "lb2-$impl-$adv"
  reset_lbs
done

# The table, as the test prints it too.
{
  printf '%-12s %14s %14s\n' "advert" "lvstun" "keepalived"
  for adv in 1000 100; do
    l="$(grep -h "^outage_ms.lvstun-$adv=" "$LAB_OUT/results.txt" | cut -d= -f2 || true)"
    k="$(grep -h "^outage_ms.keepalived-$adv=" "$LAB_OUT/results.txt" | cut -d= -f2 || true)"
    printf '%-12s %14s %14s\n' "${adv} ms" "${l:--}" "${k:--}"
  done
} >"$LAB_OUT/outage-table.txt"
cat "$LAB_OUT/outage-table.txt" >&2
lab_log "done"
