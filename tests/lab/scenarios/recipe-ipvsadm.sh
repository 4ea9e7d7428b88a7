#!/usr/bin/env bash
# The classic LVS-TUN recipe, done by hand with ipvsadm and ip: the witness the product's own
# daemons will be measured against later.
#   lb1:        VIP on eth0; IPVS TCP service VIP:80, scheduler rr, two tunnel (-i) destinations
#   web1, web2: VIP/32 on tunl0 (up), rp_filter 0 on tunl0 and all, arp_ignore 1,
#               arp_announce 2; lvstun-lab-web on 0.0.0.0:80 as www1 / www2
#   client:     REQUESTS (default 6) requests to http://VIP/, each on a new connection
#
# Artifacts (raw tool output; the Rust test parses them):
#   client-curl.txt       curl -i output of every request, plus one "curl: ..." line each
#   lb1-ipvs-stats.txt    ipvsadm -Ln --stats --exact on lb1 after the requests
#   client-neigh.json     ip -j neigh show in client (the VIP's entry: who answered ARP)
#   lb1-link.json         ip -j link show dev eth0 in lb1 (lb1's MAC)
#   healthcheck.txt       GET /healthcheck.html on both web nodes, straight from lb1
# results.txt: vip, requests, real_servers.
set -euo pipefail
# shellcheck source=tests/lab/topology.sh
. "$LAB_DIR/topology.sh"

requests="${REQUESTS:-6}"

lab_recipe_up

lab_ipvs_by_hand lb1
lab_result vip "$LAB_VIP"
lab_result real_servers "$LAB_WEB1_IP:80 $LAB_WEB2_IP:80"

# The real servers answer straight (no tunnel): proves routing between the data centers.
lab_artifact healthcheck.txt lab_exec lb1 curl -sS --max-time 10 --connect-timeout 5 \
  -w ' %{http_code}\n' "http://$LAB_WEB1_IP/healthcheck.html" "http://$LAB_WEB2_IP/healthcheck.html"

# One curl, many transfers: "Connection: close" makes each transfer a new TCP connection, so
# IPVS schedules each one, without paying a process start per request under TCG.
urls=()
for ((i = 0; i < requests; i++)); do urls+=("http://$LAB_VIP/"); done
lab_log "client: $requests requests to http://$LAB_VIP/"
lab_artifact client-curl.txt lab_exec client curl -sS -i --max-time 10 --connect-timeout 5 \
  -H 'Connection: close' -w 'curl: code=%{http_code} local_port=%{local_port} remote=%{remote_ip}:%{remote_port}\n' \
  "${urls[@]}"
lab_result requests "$requests"

lab_ipvs_conns_wait lb1 "$requests" lb1-ipvs-stats.txt || true
lab_artifact client-neigh.json ip -n client -j neigh show
lab_artifact lb1-link.json ip -n lb1 -j link show dev eth0
lab_capture final lb1
lab_log "done"
