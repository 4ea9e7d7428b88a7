#!/usr/bin/env bash
# The README's walkthrough: the classic LVS-TUN recipe run by lvstun's own daemons from the
# example objects (deploy/examples/), standalone mode, on a real kernel. Nothing on the nodes is
# configured by hand: the web nodes by `lvstun-node web`, the balancers by `lvstun-node balancer`
# (IPVS over netlink, health checks, the VIP by VRRP). ipvsadm and ip appear only as witnesses.
# Writes the walkthrough a person reads into demo.txt.
set -euo pipefail
# shellcheck source=tests/lab/topology.sh
. "$LAB_DIR/topology.sh"

NODE="$LAB_BIN/lvstun-node"
LOAD="$LAB_BIN/lvstun-lab-load"
REPO="${LAB_REPO:-$(cd "$LAB_DIR/../.." && pwd)}"
CFG="$LAB_OUT/lvstun.yaml"
DEMO="$LAB_OUT/demo.txt"
ADVERT_MS="${ADVERT_MS:-100}"
now_ms() { local t=${EPOCHREALTIME/./}; printf '%s' $((t / 1000)); }
say() { printf '%s\n' "$*" >>"$DEMO"; lab_log "$*"; }
show() { # TITLE CMD...: the command's output under a "$ ..." line
  local title="$1"
  shift
  printf '\n$ %s\n' "$title" >>"$DEMO"
  "$@" >>"$DEMO" 2>&1 || true
}
requests() { # N: N requests from the client, one connection each; prints the Node: headers
  local urls=() i
  for ((i = 0; i < $1; i++)); do urls+=("http://$LAB_VIP/"); done
  lab_exec client curl -sS -i --max-time 5 --connect-timeout 2 -H 'Connection: close' "${urls[@]}" 2>&1 |
    while IFS= read -r line; do [[ $line == Node:* ]] && printf '%s\n' "${line%$'\r'}"; done
}
wait_weight() { # NS ADDRESS WEIGHT SECS: until ipvsadm shows ADDRESS with WEIGHT
  local deadline=$(($(now_ms) + $4 * 1000)) out
  while (($(now_ms) < deadline)); do
    out="$(lab_exec "$1" ipvsadm -Ln 2>/dev/null || true)"
    [[ $out =~ $2:80[[:space:]]+Tunnel[[:space:]]+$3[[:space:]] ]] && return 0
    lab_sleep 0.3
  done
  return 1
}

{
  vs="$(<"$REPO/deploy/examples/virtualservice.yaml")"
  printf '%s\n' "${vs/advertIntervalMilliseconds: 1000/advertIntervalMilliseconds: $ADVERT_MS}"
  # Standalone hosts have no Node objects to rank by name: the priorities are named.
  printf '    priorities:\n      - {nodeName: lb1, priority: 200}\n      - {nodeName: lb2, priority: 150}\n'
  echo "---"
  cat "$REPO/deploy/examples/realservers.yaml"
} >"$CFG"

: >"$DEMO"
say "==> the lab: client, lb1, lb2, router on 192.0.2.0/24; web1 198.51.100.10 and web2 198.51.100.130 behind the router"
lab_modules ip_vs ip_vs_rr
lab_topology_up

say "==> web nodes: lvstun-node web --config (tunl0, VIP on lvstun's device, rp_filter, ARP suppression, MSS)"
for n in 1 2; do
  lab_bg "web$n" "web$n-daemon" "$NODE" web --config "$CFG" --real-server "web$n" \
    --state-dir "$LAB_OUT/state-web$n" --health-port 9100
  lab_web_start "web$n" "www$n"
done
for n in 1 2; do lab_wait_log "web$n-daemon" "*ready=true*" 120; done

say "==> balancers: lvstun-node balancer --config (IPVS over netlink, health checks, the VIP by VRRP, advert ${ADVERT_MS} ms)"
for n in 1 2; do
  lab_bg "lb$n" "lb$n-balancer" "$NODE" balancer --config "$CFG" --node-name "lb$n" \
    --state-dir "$LAB_OUT/state-lb$n" --health-port 9101 --health-address 127.0.0.1
  lab_wait_log "lb$n-balancer" '*ready to forward*' 60
done
wait_weight lb1 "$LAB_WEB1_IP" 1 60
wait_weight lb1 "$LAB_WEB2_IP" 1 60
lab_wait_log lb1-balancer '*vip ownership changed*to=Master*' 30
lab_wait_log lb2-balancer '*vip ownership changed*to=Backup*' 30

show "ipvsadm -Ln   (on lb1, the Master: what lvstun programmed)" lab_exec lb1 ipvsadm -Ln
show "ip -brief addr show eth0   (on lb1: the VIP is here)" lab_exec lb1 ip -brief addr show eth0
show "curl -i http://$LAB_VIP/   (from the client, 6 times: round robin)" requests 6
show "ipvsadm -Ln --stats   (on lb1: OutPkts 0, replies went straight from the web nodes)" lab_exec lb1 ipvsadm -Ln --stats
show "ip neigh show $LAB_VIP   (on the client: the VIP's MAC is lb1's, $(lab_mac lb1 eth0))" lab_exec client ip neigh show "$LAB_VIP"

say ""
say "==> web1's server stops: the health check (GET /healthcheck.html expecting OK, every 2 s) takes its weight to 0"
t0=$(now_ms)
lab_stop www1
wait_weight lb1 "$LAB_WEB1_IP" 0 30 && say "weight 0 after $(($(now_ms) - t0)) ms"
show "ipvsadm -Ln   (on lb1)" lab_exec lb1 ipvsadm -Ln
show "curl -i http://$LAB_VIP/   (4 times: all answered by www2)" requests 4
lab_web_start web1 www1
t0=$(now_ms)
wait_weight lb1 "$LAB_WEB1_IP" 1 30 && say "==> web1's server is back: weight 1 again after $(($(now_ms) - t0)) ms"

say ""
say "==> lb1 dies (process killed, link down) while the client sends a request every 10 ms"
lab_bg client load "$LOAD" --url "http://$LAB_VIP/" --interval-ms 10 --workers 4 \
  --duration-s 8 --connect-timeout-ms 100 --timeout-ms 1000 --out "$LAB_OUT/load.txt"
lab_sleep 2
ip -n lb1 link set eth0 down
kill -KILL "${LAB_BG_PIDS[lb1-balancer]}" 2>/dev/null || true
lab_wait_log lb2-balancer '*vip ownership changed*to=Master*' 30
lab_wait_log load '*longest_gap_ms=*' 30
show "lvstun-lab-load summary   (client-observed outage = longest gap between successful requests)" \
  grep -E '^(requests|ok|failures|longest_gap_ms)=' "$LAB_OUT/logs/load.log"
show "ip -brief addr show eth0   (on lb2: the VIP moved)" lab_exec lb2 ip -brief addr show eth0
show "ip neigh show $LAB_VIP   (on the client: now lb2's MAC, $(lab_mac lb2 eth0), learned from gratuitous ARP)" \
  lab_exec client ip neigh show "$LAB_VIP"
show "curl -i http://$LAB_VIP/   (served through lb2)" requests 4
lab_result demo "done"
