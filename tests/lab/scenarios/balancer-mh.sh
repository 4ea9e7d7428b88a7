#!/usr/bin/env bash
# Hashing schedulers across balancers: every balancer sends a client to the same real server,
# whatever order each one learned its real servers in, so a new Master continues the old one's
# flows with no shared state. The kernel builds the lookup table of `sh` (buckets dealt out
# round the list), `dh` and `mh` (Maglev: the earlier destination wins a slot both want in the
# same round) walking the service's destination list, and inserts each new destination at the
# head of that list: two balancers that learned the same real servers in another order can
# hold different tables. lvstun keeps the list in one canonical order (descending keys) on
# every balancer (balancer::plan). Run once per scheduler in SCHEDULERS (default "sh mh"):
# with two real servers, sh sends every client elsewhere when the order differs (a sharp
# control), Maglev only the few clients of slots both servers reached in the same round.
#
#   lb1, lb2:  `lvstun-node balancer --config FILE --vip-owner none`: IPVS and health checks
#              only. No VRRP and no IPVS connection sync: the VIP is moved by hand (address and
#              the client's neighbour entry), so nothing but the hash can keep a flow where it
#              was. The VirtualService is the seed's with `scheduler: SCHED`.
#   web1/2:    prepared by hand (VIP on tunl0, ARP suppressed), lvstun-lab-web.
#   client:    32 more addresses per scheduler (sh 192.0.2.128-159, mh .160-.191): the
#              schedulers hash the client's address.
#
# Phases per scheduler (each bounded; tests/tests/lab_balancer_mh.rs asserts on the results,
# keyed SCHED.*):
#   1 history   lb1 starts with a file naming only web2 (.130) and holds the VIP; an upload
#               (UPLOAD_BYTES at UPLOAD_RATE) starts through it; then web1 (.10) joins the file.
#               The kernel would list [web1, web2]; lb1 moves web2 to the head (deleted and
#               re-added at once: `moved=1` in its log) and the upload completes
#               (SCHED.survival.move). witness-SCHED-lb1.txt: lb1's list (ipvsadm --nosort).
#   2 control   lb2 programmed by ipvsadm in lb1's history order (web2, then web1: what the
#               kernel alone would hold), VIP on lb1 then on lb2: one request from each source
#               through each (map-SCHED-lb1.txt, map-SCHED-control.txt).
#   3 fixed     lb2's table cleared, its daemon started from scratch with the whole file; the
#               same requests through lb2 (map-SCHED-lb2.txt). witness-SCHED-lb2.txt.
#   4 failover  VIP on lb1; UPLOADS uploads from the first sources; once lb1 lists them
#               ESTABLISHED the VIP moves to lb2, which never heard of them: each completes
#               (SCHED.survival.failover.<source>).
#   5 steady    lb1's next full read (--resync 5) plans nothing (SCHED.resync.ops).
set -euo pipefail
# shellcheck source=tests/lab/topology.sh
. "$LAB_DIR/topology.sh"

NODE="$LAB_BIN/lvstun-node"
LOAD="$LAB_BIN/lvstun-lab-load"
REPO="${LAB_REPO:-$LAB_DIR/../..}"
UPLOAD_BYTES="${UPLOAD_BYTES:-1500000}"
UPLOAD_RATE="${UPLOAD_RATE:-150k}"
UPLOADS="${UPLOADS:-4}"
SCHEDULERS="${SCHEDULERS:-sh mh}"
lab_need_bins "$NODE" "$LOAD"

# write_config FILE REALSERVER...: the seed's VirtualService with scheduler $SCHED, and the
# named RealServers of the seed's examples.
write_config() {
  local file="$1" vs rs name keep
  shift
  vs="$(lab_example_vs_rr)"
  vs="${vs/scheduler: rr/scheduler: $SCHED}"
  {
    printf '%s\n' "$vs"
    # Split the examples' RealServers on the document separator; keep the named ones.
    rs="$(<"$REPO/deploy/examples/realservers.yaml")"
    while IFS= read -r -d $'\x1e' doc; do
      [[ $doc =~ name:\ ([a-z0-9-]+) ]] || continue
      name="${BASH_REMATCH[1]}"
      keep=0
      for want in "$@"; do [[ $want == "$name" ]] && keep=1; done
      ((keep)) && printf -- '---\n%s\n' "$doc"
    done < <(printf '%s\x1e' "${rs//$'\n'---$'\n'/$'\x1e'}")
  } >"$file.new"
  mv "$file.new" "$file"
}
start_daemon() { # NS NAME CONFIG
  lab_bg "$1" "$2" env RUST_LOG=info "$NODE" balancer --config "$3" --node-name "$1" \
    --vip-owner none --resync 5 --state-dir "$LAB_OUT/state-$2" --health-port 9101 \
    --health-address 127.0.0.1
}
witness() { # NS NAME: the kernel's list as it is (ipvsadm sorts destinations unless --nosort)
  lab_artifact "witness-$SCHED-$2.txt" lab_exec "$1" ipvsadm -Ln --nosort --stats --exact
}
# weights NS: the number of destinations of the VIP's service at weight 1.
weights() {
  local line n=0
  while IFS= read -r line; do
    [[ $line =~ ^\ +-\>\ [0-9.:]+\ +Tunnel\ +1\  ]] && n=$((n + 1))
  done < <(lab_exec "$1" ipvsadm -Ln -t "$LAB_VIP:80" 2>/dev/null)
  printf '%s' "$n"
}
wait_weights() { # NS N SECS: wait until N destinations are in rotation
  local deadline=$(($(lab_now_ms) + $3 * 1000))
  while (($(lab_now_ms) < deadline)); do
    (($(weights "$1") >= $2)) && return 0
    lab_sleep 0.2
  done
  lab_log "timed out after $3 s waiting for $2 destinations in rotation on $1"
  return 1
}
# vip_to NS: the VIP moves to NS, as a router or VRRP would move it: the address leaves the
# other balancer, and the client's neighbour entry points at NS's MAC.
vip_to() {
  local other=lb1 mac
  [[ $1 == lb1 ]] && other=lb2
  ip -n "$other" addr del "$LAB_VIP/32" dev eth0 2>/dev/null || true
  ip -n "$1" addr replace "$LAB_VIP/32" dev eth0
  mac="$(lab_mac "$1" eth0)"
  ip -n client neigh replace "$LAB_VIP" lladdr "$mac" dev eth0 nud permanent
  lab_log "VIP on $1 ($mac)"
}
# map NAME: one request from each source through the VIP, the answers in map-SCHED-NAME.txt.
map() {
  lab_artifact "map-$SCHED-$1.txt" lab_exec client "$LOAD" --url "http://$LAB_VIP/" \
    --sources "$SOURCES" --workers 4 --duration-s 120 --connect-timeout-ms 2000 \
    --timeout-ms 5000 --out "$LAB_OUT/map-$SCHED-$1-stamps.txt"
}
# upload NAME SOURCE: a rate-limited upload from SOURCE in the background (logs/upload-NAME).
upload() {
  lab_upload_start "$1" "$UPLOAD_RATE" "$LAB_OUT/upload.bin" --interface "$2"
}
# established NS SOURCE: NS's connection table has an ESTABLISHED entry from SOURCE to the VIP.
established() {
  local line
  while IFS= read -r line; do
    [[ $line =~ ^TCP\ .*\ ESTABLISHED\ +$2:[0-9]+\ +$LAB_VIP:80\  ]] && return 0
  done < <(lab_exec "$1" ipvsadm -Lnc)
  return 1
}

lab_modules ip_vs ip_vs_mh ipip # ipip first: every namespace made after it gets a tunl0
lab_topology_up
lab_web_prepare web1 web2
for ((i = 128; i <= 191; i++)); do
  printf 'addr add 192.0.2.%s/24 dev eth0\n' "$i"
done | ip -n client -batch -
lab_web_start web1 www1
lab_web_start web2 www2
head -c "$UPLOAD_BYTES" /dev/zero >"$LAB_OUT/upload.bin"
lab_result upload_bytes "$UPLOAD_BYTES"
lab_result uploads "$UPLOADS"
lab_result schedulers "$SCHEDULERS"

first=128
for SCHED in $SCHEDULERS; do
  lab_log "=== $SCHED"
  SOURCES_FIRST=$first
  SOURCES="192.0.2.$first-192.0.2.$((first + 31))"
  first=$((first + 32))
  lab_result "$SCHED.sources" "$SOURCES"

  # --- 1. history: lb1 learns web2, then web1 ------------------------------------------------
  CFG1="$LAB_OUT/lb1-$SCHED.yaml"
  write_config "$CFG1" web2
  start_daemon lb1 "lb1-$SCHED" "$CFG1"
  wait_weights lb1 1 60
  vip_to lb1
  upload "move-$SCHED" "$LAB_CLIENT_IP"
  lab_sleep 2
  lab_artifact "conns-$SCHED-lb1-move.txt" lab_exec lb1 ipvsadm -Lnc
  MOVE_MS=$(lab_now_ms)
  write_config "$CFG1" web1 web2
  lab_wait_log "lb1-$SCHED" '*moved into the canonical list order*' 30
  lab_result "$SCHED.move_ms" $(($(lab_now_ms) - MOVE_MS))
  wait_weights lb1 2 60
  witness lb1 lb1
  lab_upload_result "move-$SCHED"
  lab_result "$SCHED.survival.move" "$LAB_UPLOAD_RESULT"

  # --- 2. control: lb2 in lb1's history order, by hand ---------------------------------------
  lab_sysctl lb2 net.ipv4.vs.sloppy_tcp=1
  lab_exec lb2 ipvsadm -R <<EOF
-A -t $LAB_VIP:80 -s $SCHED
-a -t $LAB_VIP:80 -r $LAB_WEB2_IP:80 -i -w 1
-a -t $LAB_VIP:80 -r $LAB_WEB1_IP:80 -i -w 1
EOF
  witness lb2 control
  map lb1
  vip_to lb2
  map control
  lab_exec lb2 ipvsadm -C

  # --- 3. fixed: lb2's daemon from scratch -----------------------------------------------------
  CFG2="$LAB_OUT/lb2-$SCHED.yaml"
  write_config "$CFG2" web1 web2
  start_daemon lb2 "lb2-$SCHED" "$CFG2"
  wait_weights lb2 2 60
  witness lb2 lb2
  map lb2

  # --- 4. failover: uploads that started on lb1 finish through lb2 ------------------------------
  vip_to lb1
  for ((i = 0; i < UPLOADS; i++)); do
    upload "failover-$SCHED-$i" "192.0.2.$((SOURCES_FIRST + i))"
  done
  deadline=$(($(lab_now_ms) + 30000))
  for ((i = 0; i < UPLOADS; i++)); do
    until established lb1 "192.0.2.$((SOURCES_FIRST + i))"; do
      (($(lab_now_ms) < deadline)) || { lab_log "upload $i never established on lb1"; break; }
      lab_sleep 0.2
    done
  done
  lab_artifact "conns-$SCHED-lb1-failover.txt" lab_exec lb1 ipvsadm -Lnc
  lab_artifact "conns-$SCHED-lb2-before-failover.txt" lab_exec lb2 ipvsadm -Lnc
  vip_to lb2
  for ((i = 0; i < UPLOADS; i++)); do
    lab_upload_result "failover-$SCHED-$i"
    lab_result "$SCHED.survival.failover.192.0.2.$((SOURCES_FIRST + i))" "$LAB_UPLOAD_RESULT"
  done

  # --- 5. steady: lb1's next full read plans nothing ---------------------------------------------
  # The daemon reads the kernel back in full every 5 s here (--resync 5, trigger=resync); after
  # the move that read must find the list in order.
  deadline=$(($(lab_now_ms) + 20000))
  resync=""
  while (($(lab_now_ms) < deadline)); do
    seen=0
    while IFS= read -r line; do
      [[ $line == *'moved into the canonical list order'* ]] && seen=$((seen + 1))
      if ((seen)) && [[ $line == *reconciled*trigger=resync* ]]; then
        resync="$line"
        break
      fi
    done <"$LAB_OUT/logs/lb1-$SCHED.log"
    [[ -n $resync ]] && break
    lab_sleep 0.5
  done
  [[ $resync =~ \ ops=([0-9]+) ]] && lab_result "$SCHED.resync.ops" "${BASH_REMATCH[1]}"
  moved=0
  while IFS= read -r line; do
    [[ $line == *'moved into the canonical list order'* ]] && moved=$((moved + 1))
  done <"$LAB_OUT/logs/lb1-$SCHED.log"
  lab_result "$SCHED.moved_lines" "$moved"

  # Next scheduler from a clean slate: daemons stopped, tables cleared, VIP nowhere.
  lab_stop "lb1-$SCHED"
  lab_stop "lb2-$SCHED"
  for lb in lb1 lb2; do
    lab_exec "$lb" ipvsadm -C
    ip -n "$lb" addr del "$LAB_VIP/32" dev eth0 2>/dev/null || true
  done
done
lab_log "done"
