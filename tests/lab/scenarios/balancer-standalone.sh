#!/usr/bin/env bash
# The balancer role in standalone mode against a real kernel: `lvstun-node balancer --config`
# on lb1 with the seed's objects (deploy/examples/: VIP 192.0.2.100:80 rr, web1 198.51.100.10,
# web2 198.51.100.130), ipvsadm as the witness. The VIP is put on lb1's eth0 by hand and the
# daemon runs with --vip-owner none (IPVS only: VIP ownership inside the balancer is proven by
# balancer-vrrp.sh, where a restart of the Master is a handover to the Backup, not a no-op) and
# the web nodes are prepared by hand as in recipe-ipvsadm.sh.
#
# Phases (each leaves raw output; the Rust test tests/tests/lab_balancer.rs asserts on it):
#   1 programmed   the daemon programs the seed's service; both real servers rise to weight 1
#                  once their health checks pass (witness-1.txt, save-1.txt)
#   2 traffic      REQUESTS requests from the client alternate www1/www2; OutPkts 0
#                  (client-curl.txt, lb1-ipvs-stats.txt)
#   3 weight       web2's weight 1 -> 2 in the file: one pass, one operation (save-2.txt; the
#                  pass's log line as result weight_pass)
#   4 restart      the daemon is stopped and started again under a bounded load (one request
#                  every 50 ms for RESTART_LOAD_S seconds): no request fails, and the new
#                  daemon's first pass sends nothing (load-restart.txt, save-3/4.txt,
#                  restart_pass)
#   5 foreign      a service made by ipvsadm on another VIP (192.0.2.200:443) survives it all
#   6 down / up    web1's server stops: its weight goes to 0 and every request goes to www2;
#                  it starts again: weight 1 (down_ms, up_ms, client-curl-down.txt, save-5/6);
#                  requests from source ports whose old IPVS entries point at web1 also reach
#                  www2 (expire_nodest_conn, reuse_ports, client-curl-reuse.txt)
#   7 refusal      a RealServer web3 at 192.0.2.255 (lb1's front broadcast address: a tunnel
#                  destination the kernel refuses with EINVAL, "address not unicast") is added:
#                  the refusal is logged with its hint and listed by /readyz; the next pass
#                  (another edit) holds the identical operation back (refuse_pass, held_pass,
#                  refused_log)
# Also: /readyz and /metrics of the daemon (readyz.txt, metrics.txt), the owned-VIPs record
# (state-lb1/balancer-owned.json).
set -euo pipefail
# shellcheck source=tests/lab/topology.sh
. "$LAB_DIR/topology.sh"

NODE="$LAB_BIN/lvstun-node"
LOAD="$LAB_BIN/lvstun-lab-load"
REPO="${LAB_REPO:-$LAB_DIR/../..}"
REQUESTS="${REQUESTS:-6}"
RESTART_LOAD_S="${RESTART_LOAD_S:-16}"
FOREIGN=192.0.2.200
CFG="$LAB_OUT/lvstun.yaml"
STATE="$LAB_OUT/state-lb1"
lab_need_bins "$NODE" "$LOAD"

witness() { # N: ipvsadm -Ln as witness-N.txt, ipvsadm -Sn sorted as save-N.txt
  lab_artifact "witness-$1.txt" lab_exec lb1 ipvsadm -Ln
  lab_exec lb1 ipvsadm -Sn | sort >"$LAB_OUT/save-$1.txt"
}
last_source_pass() { # NAME: the last source pass's line
  local l found=""
  while IFS= read -r l; do
    [[ $l == *'reconciled trigger=source'* ]] && found="$l"
  done <"$LAB_OUT/logs/$1.log"
  printf '%s' "$found"
}
write_config() { # WEB2_WEIGHT [EXTRA-DOC]: the seed's objects, web2's weight as given, plus
  # EXTRA-DOC; written by rename, as editors do
  local rs
  rs="$(<"$REPO/deploy/examples/realservers.yaml")"
  rs="${rs/address: $LAB_WEB2_IP$'\n'  weight: 1/address: $LAB_WEB2_IP$'\n'  weight: $1}"
  {
    lab_example_vs_rr
    echo "---"
    printf '%s\n' "$rs"
    [[ -z ${2:-} ]] || printf -- '---\n%s\n' "$2"
  } >"$CFG.new"
  mv "$CFG.new" "$CFG"
}
start_daemon() { # NAME
  lab_bg lb1 "$1" env RUST_LOG=info "$NODE" balancer --config "$CFG" --node-name lb1 \
    --state-dir "$STATE" --health-port 9101 --health-address 127.0.0.1 --vip-owner none
}

lab_recipe_up
ip -n lb1 addr add "$LAB_VIP/32" dev eth0

# A service lvstun does not own, made by another tool before lvstun starts.
lab_exec lb1 ipvsadm -A -t "$FOREIGN:443" -s rr
lab_exec lb1 ipvsadm -a -t "$FOREIGN:443" -r "$LAB_WEB1_IP:443" -g -w 4

# --- 1. programmed ----------------------------------------------------------------------------
write_config 1
t0=$(lab_now_ms)
start_daemon balancer-1
lab_wait_log balancer-1 '*reconciled trigger=start*' 60
lab_result start_pass "$(lab_log_line balancer-1 '*reconciled trigger=start*')"
lab_wait_rule lb1 "-a -t $LAB_VIP:80 -r $LAB_WEB1_IP:80 -i -w 1" 30
lab_wait_rule lb1 "-a -t $LAB_VIP:80 -r $LAB_WEB2_IP:80 -i -w 1" 30
lab_result programmed_ms $(($(lab_now_ms) - t0))
witness 1

# --- 2. traffic --------------------------------------------------------------------------------
urls=()
for ((i = 0; i < REQUESTS; i++)); do urls+=("http://$LAB_VIP/"); done
lab_artifact client-curl.txt lab_exec client curl -sS -i --max-time 10 --connect-timeout 5 \
  -H 'Connection: close' -w 'curl: code=%{http_code} local_port=%{local_port}\n' "${urls[@]}"
lab_result requests "$REQUESTS"
lab_ipvs_conns_wait lb1 "$REQUESTS" lb1-ipvs-stats.txt || true

# --- 3. one weight changes in the file ---------------------------------------------------------
write_config 2
lab_wait_log balancer-1 '*reconciled trigger=source*' 30
lab_result weight_pass "$(lab_log_line balancer-1 '*reconciled trigger=source*')"
witness 2

# --- 4. restart under load -----------------------------------------------------------------------
lab_bg client load-restart "$LOAD" --url "http://$LAB_VIP/" --interval-ms 50 \
  --duration-s "$RESTART_LOAD_S" --connect-timeout-ms 1000 --timeout-ms 2000 \
  --out "$LAB_OUT/load-restart.txt"
lab_sleep 3
lab_stop balancer-1
lab_result stop_ms "$(lab_now_ms)"
witness 3
start_daemon balancer-2
lab_wait_log balancer-2 '*reconciled trigger=start*' 60
lab_result restart_pass "$(lab_log_line balancer-2 '*reconciled trigger=start*')"
lab_wait_log load-restart 'longest_gap_ms=*' $((RESTART_LOAD_S + 60))
while IFS= read -r line; do
  case "${line%%=*}" in
    requests | ok | failures | longest_gap_ms | start_unix_ms) lab_result "load.${line%%=*}" "${line#*=}" ;;
  esac
done <"$LAB_OUT/logs/load-restart.log"
witness 4

# --- 6. web1 down, then up ----------------------------------------------------------------------
lab_stop www1
t_down=$(lab_now_ms)
lab_wait_rule lb1 "-a -t $LAB_VIP:80 -r $LAB_WEB1_IP:80 -i -w 0" 30
lab_result down_ms $(($(lab_now_ms) - t_down))
lab_result down_event "$(lab_log_line balancer-2 '*health: unhealthy*' || echo none)"
witness 5
urls=()
for ((i = 0; i < 4; i++)); do urls+=("http://$LAB_VIP/"); done
lab_artifact client-curl-down.txt lab_exec client curl -sS -i --max-time 10 --connect-timeout 5 \
  -H 'Connection: close' "${urls[@]}"
# A client reusing a source port whose old connection went to web1 (its IPVS entry lingers in
# FIN_WAIT for two minutes: TUN mode sees only the client's half) must still reach www2: the
# balancer set expire_nodest_conn=1, so the kernel reschedules that SYN instead of sending it
# to the dead server. Clients reuse ports by themselves (the first CI run caught it); here the
# reuse is forced with --local-port on ports taken from the connection table.
lab_result expire_nodest_conn "$(lab_exec lb1 cat /proc/sys/net/ipv4/vs/expire_nodest_conn)"
lab_artifact conns-down.txt lab_exec lb1 ipvsadm -Lnc
# Only ports the client's kernel no longer holds (a port in the client's TIME_WAIT cannot be
# bound; the kernel would not pick it either).
lab_artifact client-sockets-down.txt lab_exec client ss -Htan
mapfile -t reuse < <(awk -v d="$LAB_WEB1_IP:80" '
  FNR == NR { n = split($4, a, ":"); held[a[n]] = 1; next }
  $1 == "TCP" && $6 == d { split($4, a, ":"); if (!(a[2] in held)) print a[2] }' \
  "$LAB_OUT/client-sockets-down.txt" "$LAB_OUT/conns-down.txt" | head -n 3)
lab_result reuse_ports "${reuse[*]}"
: >"$LAB_OUT/client-curl-reuse.txt"
for port in "${reuse[@]}"; do
  lab_exec client curl -sS -i --max-time 10 --connect-timeout 5 --local-port "$port" \
    -H 'Connection: close' "http://$LAB_VIP/" >>"$LAB_OUT/client-curl-reuse.txt" 2>&1 || true
done
t_up=$(lab_now_ms)
lab_web_start web1 www1
lab_wait_rule lb1 "-a -t $LAB_VIP:80 -r $LAB_WEB1_IP:80 -i -w 1" 30
lab_result up_ms $(($(lab_now_ms) - t_up))
witness 6

# --- 7. a destination the kernel refuses ------------------------------------------------------------
WEB3="apiVersion: lvstun.io/v1alpha1
kind: RealServer
metadata:
  name: web3
  labels:
    app: www
spec:
  address: 192.0.2.255"
write_config 2 "$WEB3"
lab_wait_count balancer-2 '*reconciled trigger=source*' 1 30
lab_result refuse_pass "$(lab_log_line balancer-2 '*reconciled trigger=source*')"
lab_result refused_log "$(lab_log_line balancer-2 '*kernel refused*' || echo none)"
write_config 1 "$WEB3"
lab_wait_count balancer-2 '*reconciled trigger=source*' 2 30
lab_result held_pass "$(last_source_pass balancer-2)"
witness 7

# --- the daemon's own view -----------------------------------------------------------------------
lab_artifact readyz.txt lab_exec lb1 curl -sS --max-time 5 http://127.0.0.1:9101/readyz
lab_artifact metrics.txt lab_exec lb1 curl -sS --max-time 5 http://127.0.0.1:9101/metrics
lab_result health_passes "$(lab_count_lines balancer-2 '*reconciled trigger=health*')"
lab_capture final lb1
lab_log "done"
