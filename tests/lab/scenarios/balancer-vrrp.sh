#!/usr/bin/env bash
# VIP ownership inside the balancer role: lb1 and lb2 both run `lvstun-node balancer --config
# FILE --node-name lbN` with the same file (the seed's VirtualService, VIP 192.0.2.100:80 rr,
# advertisement interval ADVERT_MS, per-node priorities lb1 200 / lb2 100; the seed's two
# RealServers). Nobody puts the VIP anywhere by hand: the daemons elect and hold it. The web
# nodes are prepared by hand as in balancer-standalone.sh. ipvsadm and ip are the witnesses.
#
# Phases (each bounded; raw output stays in the run folder, tests/tests/lab_balancer_vrrp.rs
# asserts on it):
#   1 steady     lb1 Master, lb2 Backup (their logs, /metrics), the VIP only on lb1, the
#                client's neighbour entry for the VIP = lb1's MAC, REQUESTS requests alternate
#                www1/www2, both balancers list the service (witness-lb1/lb2.txt), sync
#                daemons master on lb1 / backup on lb2 (sync-lb*.txt)
#   2 load       one lvstun-lab-load process runs through phases 3-5 (load.txt, stamps)
#   3 crash      lb1's link goes down and its daemon is killed with SIGKILL (kill_ms): lb2
#                becomes Master (takeover_ms from its log), holds the VIP, the client's ARP
#                entry moves to lb2's MAC (neigh-crash.json)
#   4 preempt    lb1's link comes back and its daemon starts again (back_ms): once it forwards
#                it takes its priority 200 and preempts (preempt_ms), lb2 steps down
#   5 graceful   SIGTERM to lb1's daemon (term_ms): priority 0, VIP removed, lb2 Master after
#                about Skew_Time (graceful_takeover_ms); lb1 no longer has the VIP
#   6 killed     (after the load) lb1's daemon starts again and preempts; then only the daemon
#                is killed with SIGKILL, lb1's node and link alive (issue 13): from the kill, both
#                balancers' addresses are sampled every SAMPLE_MS for the VIP's lifetime (from
#                lb1's log) + 3 s (holders.txt: "t_ms lb1 lb2", t from the kill, 1 = holds
#                the VIP); killed.* = the lifetime, lb2's takeover, when lb1's VIP was gone, and
#                how many samples had two holders / none (addr-lb1-killed.txt: the VIP as the
#                Master holds it, with its lifetime)
#   7 withdrawn  the VirtualService leaves the file (only the RealServers stay): lb2, Master, stops
#                its router gracefully and the VIP leaves lb2 (withdrawn.*)
# Also: lb2's connection table while it was Backup (conns-lb2-backup.txt: the sync daemon
# carried lb1's connections), both daemons' /metrics, and an upload of UPLOAD_BYTES at
# UPLOAD_RATE started through lb1 before the crash (rr + the daemons' connection sync; the
# client->server stream is the one that crosses the balancer): its outcome is recorded as
# survival.rr = "<curl exit> <http code> <bytes the server counted>" (upload-conns-*.txt). The
# upload leaves from client ports UPLOAD_PORTS (below the ephemeral range, so no short request
# of the load shares them) so that its entry can be found in both balancers' tables; sloppy_tcp.lbN
# is the net.ipv4.vs.sloppy_tcp each daemon set.
set -euo pipefail
# shellcheck source=tests/lab/topology.sh
. "$LAB_DIR/topology.sh"

NODE="$LAB_BIN/lvstun-node"
LOAD="$LAB_BIN/lvstun-lab-load"
REPO="${LAB_REPO:-$LAB_DIR/../..}"
REQUESTS="${REQUESTS:-6}"
ADVERT_MS="${ADVERT_MS:-100}"
LOAD_S="${LOAD_S:-75}"
UPLOAD_BYTES="${UPLOAD_BYTES:-2000000}"
UPLOAD_RATE="${UPLOAD_RATE:-250k}"
UPLOAD_PORTS="${UPLOAD_PORTS:-30100-30149}"
SAMPLE_MS="${SAMPLE_MS:-100}"
CFG="$LAB_OUT/lvstun.yaml"
lab_need_bins "$NODE" "$LOAD"

# became NAME STATE MIN_MS: unix_ms of the first "vip ownership changed ... to=STATE" line of
# logs/NAME.log stamped at or after MIN_MS (the daemon logs its wall clock in unix_ms).
became() {
  local file="$LAB_OUT/logs/$1.log" line
  while IFS= read -r line; do
    if [[ $line == *'vip ownership changed'*"to=$2 "* && $line =~ unix_ms=([0-9]+) ]] &&
      ((BASH_REMATCH[1] >= $3)); then
      printf '%s' "${BASH_REMATCH[1]}"
      return 0
    fi
  done <"$file"
  return 1
}
start_daemon() { # NS NAME
  lab_bg "$1" "$2" env RUST_LOG=info "$NODE" balancer --config "$CFG" --node-name "$1" \
    --state-dir "$LAB_OUT/state-$1" --health-port 9101 --health-address 127.0.0.1
}
# lb1's link back up. Taking a link down flushes the routes through it, so the default route
# (toward the router and the web nodes' subnets) is put back too.
lb1_up() {
  ip -n lb1 -batch - <<EOF
link set eth0 up
route replace default via $LAB_ROUTER_FRONT_IP
EOF
}
metrics() { # NS TAG
  lab_artifact "metrics-$1-$2.txt" lab_exec "$1" curl -sS --max-time 5 http://127.0.0.1:9101/metrics
}

lab_recipe_up
MAC_LB1="$(lab_mac lb1 eth0)"
MAC_LB2="$(lab_mac lb2 eth0)"
lab_result mac.lb1 "$MAC_LB1"
lab_result mac.lb2 "$MAC_LB2"
lab_result advert_ms "$ADVERT_MS"
lab_vrrp_pair_config "$CFG" "$ADVERT_MS"

# --- 1. steady --------------------------------------------------------------------------------
t0=$(lab_now_ms)
start_daemon lb1 lb1-a
lab_wait_log lb1-a '*vip ownership changed*to=Master*' 60
lab_wait_router_ready lb1-a
start_daemon lb2 lb2
lab_wait_log lb2 '*vip ownership changed*to=Backup*' 60
lab_wait_router_ready lb2
lab_result steady_ms $(($(lab_now_ms) - t0))
lab_sleep 1
lab_result steady.lb1_vip "$(lab_has_vip lb1 && echo yes || echo no)"
lab_result steady.lb2_vip "$(lab_has_vip lb2 && echo yes || echo no)"
lab_result steady.lb1_master_lines "$(lab_count_lines lb1-a '*vip ownership changed*to=Master*')"
lab_result steady.lb2_master_lines "$(lab_count_lines lb2 '*vip ownership changed*to=Master*')"
urls=()
for ((i = 0; i < REQUESTS; i++)); do urls+=("http://$LAB_VIP/"); done
lab_artifact client-curl.txt lab_exec client curl -sS -i --max-time 10 --connect-timeout 5 \
  -H 'Connection: close' "${urls[@]}"
lab_neigh steady
lab_result neigh.steady "$(lab_vip_mac steady)"
for lb in lb1 lb2; do
  lab_artifact "witness-$lb.txt" lab_exec "$lb" ipvsadm -Ln
  lab_artifact "sync-$lb.txt" lab_exec "$lb" ipvsadm -L --daemon
  lab_result "sloppy_tcp.$lb" "$(lab_exec "$lb" cat /proc/sys/net/ipv4/vs/sloppy_tcp)"
  lab_artifact "addr-$lb-steady.txt" ip -n "$lb" -4 -o addr show dev eth0
  metrics "$lb" steady
done

# --- 2. one load process through the failures ---------------------------------------------------
lab_bg client load "$LOAD" --url "http://$LAB_VIP/" --interval-ms 10 --workers 4 \
  --duration-s "$LOAD_S" --connect-timeout-ms 100 --timeout-ms 1000 --out "$LAB_OUT/load.txt"
head -c "$UPLOAD_BYTES" /dev/zero >"$LAB_OUT/upload.bin"
lab_result upload_bytes "$UPLOAD_BYTES"
lab_result upload_ports "$UPLOAD_PORTS"
lab_bg client upload curl -sS --max-time 40 --connect-timeout 5 --limit-rate "$UPLOAD_RATE" \
  --local-port "$UPLOAD_PORTS" \
  -H 'Expect:' -H 'Connection: close' --data-binary "@$LAB_OUT/upload.bin" \
  -w '\ncurl: code=%{http_code} size_upload=%{size_upload}\n' "http://$LAB_VIP/upload"
lab_sleep 3
# lb1 dies only once lb2 holds the upload's entry (bounded; see lab_wait_synced).
lab_result sync_wait_ms "$(lab_wait_synced lb2 "${UPLOAD_PORTS%-*}" "${UPLOAD_PORTS#*-}" 15 || true)"
# Connections lb1 scheduled, as lb2 knows them from the sync daemon while it is Backup.
lab_artifact conns-lb2-backup.txt lab_exec lb2 ipvsadm -Lnc
lab_artifact conns-lb1-master.txt lab_exec lb1 ipvsadm -Lnc

# --- 3. lb1 dies hard -------------------------------------------------------------------------------
ip -n lb1 link set eth0 down
KILL_MS=$(lab_now_ms)
kill -KILL "${LAB_BG_PIDS[lb1-a]}" 2>/dev/null || true
lab_stop lb1-a
lab_result kill_ms "$KILL_MS"
lab_wait_count lb2 '*vip ownership changed*to=Master*' 1 20
lab_result takeover_ms $(($(became lb2 Master "$KILL_MS") - KILL_MS))
lab_sleep 1
lab_result crash.lb2_vip "$(lab_has_vip lb2 && echo yes || echo no)"
lab_neigh crash
lab_result neigh.crash "$(lab_vip_mac crash)"
metrics lb2 crash
# The upload that was in flight through lb1.
lab_wait_log upload 'curl: code=*' 60 || true
lab_artifact upload-conns-lb2.txt lab_exec lb2 ipvsadm -Lnc
crc=none
if [[ -n ${LAB_BG_PIDS[upload]:-} ]]; then
  wait "${LAB_BG_PIDS[upload]}" && crc=0 || crc=$?
  unset "LAB_BG_PIDS[upload]"
fi
body="" code=""
while IFS= read -r line; do
  [[ $line =~ ^curl:\ code=([0-9]+) ]] && code="${BASH_REMATCH[1]}"
  [[ $line =~ ^[0-9]+$ ]] && body="$line"
  [[ $line =~ ([0-9]+)\ bytes ]] && body="${BASH_REMATCH[1]}"
done <"$LAB_OUT/logs/upload.log"
lab_result survival.rr "$crc ${code:-none} ${body:-none}"

# --- 4. lb1 returns and preempts ---------------------------------------------------------------------
lb1_up
BACK_MS=$(lab_now_ms)
lab_result back_ms "$BACK_MS"
start_daemon lb1 lb1-b
lab_wait_log lb1-b '*vip ownership changed*to=Master*' 60
lab_result preempt_ms $(($(became lb1-b Master "$BACK_MS") - BACK_MS))
lab_wait_count lb2 '*vip ownership changed*to=Backup*' 2 20
lab_sleep 1
lab_result preempt.lb1_vip "$(lab_has_vip lb1 && echo yes || echo no)"
lab_result preempt.lb2_vip "$(lab_has_vip lb2 && echo yes || echo no)"
lab_neigh preempt
lab_result neigh.preempt "$(lab_vip_mac preempt)"
lab_sleep 2

# --- 5. graceful stop of the Master ------------------------------------------------------------------
TERM_MS=$(lab_now_ms)
lab_result term_ms "$TERM_MS"
lab_stop lb1-b
lab_result term_done_ms "$(lab_now_ms)"
lab_wait_count lb2 '*vip ownership changed*to=Master*' 2 20
lab_result graceful_takeover_ms $(($(became lb2 Master "$TERM_MS") - TERM_MS))
lab_result graceful.lb1_vip "$(lab_has_vip lb1 && echo yes || echo no)"
lab_result graceful.owner_stopped "$(lab_count_lines lb1-b '*vip ownership stopped*')"
lab_artifact addr-lb1-graceful.txt ip -n lb1 -4 -o addr show dev eth0
lab_neigh graceful
lab_result neigh.graceful "$(lab_vip_mac graceful)"

lab_wait_log load 'longest_gap_ms=*' $((LOAD_S + 60))
while IFS= read -r line; do
  case "${line%%=*}" in
    requests | ok | failures | longest_gap_ms | gap_from_ms | gap_to_ms | start_unix_ms) lab_result "load.${line%%=*}" "${line#*=}" ;;
    node.*) lab_result "load.${line%%=*}" "${line#*=}" ;;
  esac
done <"$LAB_OUT/logs/load.log"
metrics lb2 final

# --- 6. lb1's daemon is killed, its node alive: the VIP dies with it -------------------------------
start_daemon lb1 lb1-c
lab_wait_log lb1-c '*vip ownership changed*to=Master*' 60
lab_wait_count lb2 '*vip ownership changed*to=Backup*' 3 20
lab_sleep 1
lab_artifact addr-lb1-killed.txt ip -n lb1 -4 -o addr show dev eth0
lifetime_s=""
while IFS= read -r line; do
  [[ $line =~ vip_lifetime_s=([0-9]+) ]] && lifetime_s="${BASH_REMATCH[1]}"
done <"$LAB_OUT/logs/lb1-c.log"
lab_result killed.lifetime_s "${lifetime_s:-none}"
KILLED_MS=$(lab_now_ms)
kill -KILL "${LAB_BG_PIDS[lb1-c]}" 2>/dev/null || true
lab_result killed.kill_ms "$KILLED_MS"
samples=0 both=0 none=0 gone_ms=none
until_ms=$((KILLED_MS + (${lifetime_s:-10} + 3) * 1000))
: >"$LAB_OUT/holders.txt"
while (($(lab_now_ms) < until_ms)); do
  t=$(($(lab_now_ms) - KILLED_MS))
  h1=0 h2=0
  lab_has_vip lb1 && h1=1
  lab_has_vip lb2 && h2=1
  printf '%s %s %s\n' "$t" "$h1" "$h2" >>"$LAB_OUT/holders.txt"
  samples=$((samples + 1))
  ((h1 && h2)) && both=$((both + 1))
  ((h1 || h2)) || none=$((none + 1))
  [[ $gone_ms == none ]] && ((!h1)) && gone_ms=$t
  lab_sleep "$((SAMPLE_MS / 1000)).$(printf '%03d' $((SAMPLE_MS % 1000)))"
done
lab_stop lb1-c
lab_result killed.samples "$samples"
lab_result killed.two_holders "$both"
lab_result killed.no_holder "$none"
lab_result killed.lb1_gone_ms "$gone_ms"
lab_result killed.takeover_ms $(($(became lb2 Master "$KILLED_MS") - KILLED_MS))
lab_result killed.lb2_vip "$(lab_has_vip lb2 && echo yes || echo no)"

# --- 7. the VirtualService is withdrawn ----------------------------------------------------------
cp "$REPO/deploy/examples/realservers.yaml" "$CFG.new"
mv "$CFG.new" "$CFG"
WITHDRAW_MS=$(lab_now_ms)
lab_wait_count lb2 '*vrrp: router stopped*' 1 30
lab_result withdrawn.ms $(($(lab_now_ms) - WITHDRAW_MS))
lab_result withdrawn.lb2_vip "$(lab_has_vip lb2 && echo yes || echo no)"
lab_result withdrawn.to_initialize "$(lab_count_lines lb2 '*vip ownership changed*from=Master to=Initialize*')"
lab_artifact witness-lb2-final.txt lab_exec lb2 ipvsadm -Ln
lab_artifact sync-lb2-final.txt lab_exec lb2 ipvsadm -L --daemon
metrics lb2 withdrawn
lab_stop lb2
lab_capture final lb2
lab_log "done"
