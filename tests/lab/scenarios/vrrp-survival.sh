#!/usr/bin/env bash
# Connection survival across a VIP failover: a long upload through the VIP, started while lb1
# is Master, must complete after lb1 dies hard (eth0 down, daemon killed -9) and lb2 takes the
# VIP (lvstun-node vrrp, 100 ms interval). The client->server direction is the one that goes
# through the balancer (replies return directly from the web node), so an upload is the
# stream that has to move from lb1 to lb2 mid-flight. Two ways to keep it on its real server:
#   mh:   the Maglev scheduler with the same destinations in the same order on both lbs and
#         net.ipv4.vs.sloppy_tcp=1 on lb2 (it picks up a mid-stream packet without a SYN and
#         hashes it to the same real server); IPVS sync off (--no-sync) to prove mh alone.
#   rr:   round robin plus IPVS connection sync (lvstun runs master on lb1, backup on lb2,
#         sync ID = VRID 51): lb2 already has the connection when it takes over.
# Results: survival.<mode>=<curl exit> <http code> <bytes the server counted>, upload_bytes.
set -euo pipefail
# shellcheck source=tests/lab/topology.sh
. "$LAB_DIR/topology.sh"

NODE="$LAB_BIN/lvstun-node"
BYTES="${UPLOAD_BYTES:-2000000}"
RATE="${UPLOAD_RATE:-250k}"

lab_modules ip_vs ip_vs_rr ip_vs_mh ipip
lab_topology_up
for ns in web1 web2; do
  ip -n "$ns" -batch - <<EOF
addr add $LAB_VIP/32 dev tunl0
link set tunl0 up
EOF
  lab_sysctl "$ns" net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
    net.ipv4.conf.tunl0.rp_filter=0 net.ipv4.conf.eth0.rp_filter=0 \
    net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
    net.ipv4.conf.eth0.arp_ignore=1 net.ipv4.conf.eth0.arp_announce=2
done
lab_web_start web1 www1
lab_web_start web2 www2
head -c "$BYTES" /dev/zero >"$LAB_OUT/upload.bin"
lab_result upload_bytes "$BYTES"

for mode in ${SURVIVAL_MODES:-mh rr}; do
  lab_log "=== survival with $mode"
  sched="$mode"
  sync_flag=()
  [[ $mode == mh ]] && sync_flag=(--no-sync)
  for lb in lb1 lb2; do
    lab_exec "$lb" ipvsadm -R <<EOF
-A -t $LAB_VIP:80 -s $sched
-a -t $LAB_VIP:80 -r $LAB_WEB1_IP:80 -i -w 1
-a -t $LAB_VIP:80 -r $LAB_WEB2_IP:80 -i -w 1
EOF
    lab_sysctl "$lb" net.ipv4.vs.sloppy_tcp="$([[ $mode == mh ]] && echo 1 || echo 0)"
  done
  lab_bg lb1 "lb1-$mode" "$NODE" vrrp --interface eth0 --vrid 51 --vip "$LAB_VIP" \
    --priority 200 --advert-ms 100 "${sync_flag[@]}"
  lab_wait_log "lb1-$mode" '*"state":"Master"*' 20
  lab_bg lb2 "lb2-$mode" "$NODE" vrrp --interface eth0 --vrid 51 --vip "$LAB_VIP" \
    --priority 150 --advert-ms 100 "${sync_flag[@]}"
  lab_wait_log "lb2-$mode" '*"state":"Backup"*' 20
  lab_sleep 1
  lab_bg client "upload-$mode" curl -sS --max-time 90 --connect-timeout 5 --limit-rate "$RATE" \
    -H 'Expect:' -H 'Connection: close' --data-binary "@$LAB_OUT/upload.bin" \
    -w '\ncurl: code=%{http_code} size_upload=%{size_upload}\n' "http://$LAB_VIP/upload"
  lab_sleep 3
  lab_artifact "lb1-conns-$mode.txt" lab_exec lb1 ipvsadm -Lnc
  lab_artifact "lb2-conns-before-$mode.txt" lab_exec lb2 ipvsadm -Lnc
  ip -n lb1 link set eth0 down
  kill -KILL "${LAB_BG_PIDS[lb1-$mode]}" 2>/dev/null || true
  lab_stop "lb1-$mode"
  lab_log "lb1 down mid-upload ($mode)"
  lab_wait_log "lb2-$mode" '*"state":"Master"*' 20
  rc=0
  lab_wait_log "upload-$mode" 'curl: code=*' 100 || rc=$?
  lab_artifact "lb2-conns-after-$mode.txt" lab_exec lb2 ipvsadm -Lnc
  pid="${LAB_BG_PIDS[upload-$mode]:-}"
  crc=none
  if [[ -n $pid ]]; then
    wait "$pid" && crc=0 || crc=$?
    unset "LAB_BG_PIDS[upload-$mode]"
  fi
  body="" code=""
  while IFS= read -r line; do
    [[ $line =~ ^curl:\ code=([0-9]+) ]] && code="${BASH_REMATCH[1]}"
    [[ $line =~ ^[0-9]+$ ]] && body="$line"
    [[ $line =~ ([0-9]+)\ bytes ]] && body="${BASH_REMATCH[1]}"
  done <"$LAB_OUT/logs/upload-$mode.log"
  lab_result "survival.$mode" "$crc ${code:-none} ${body:-none}"
  lab_log "=== $mode: curl exit $crc, http ${code:-none}, server counted ${body:-none} bytes (wait rc $rc)"
  lab_stop "lb2-$mode"
  ip -n lb1 -batch - <<EOF
link set eth0 up
route replace default via $LAB_ROUTER_FRONT_IP
EOF
  for lb in lb1 lb2; do
    ip -n "$lb" addr del "$LAB_VIP/32" dev eth0 2>/dev/null || true
    lab_exec "$lb" ipvsadm -C
  done
done
lab_log "done"
