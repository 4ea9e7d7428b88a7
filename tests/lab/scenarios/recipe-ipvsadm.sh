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

lab_modules ip_vs ip_vs_rr ipip # ipip first: every namespace made after it gets a tunl0
lab_topology_up

lab_web_prepare web1 web2
lab_web_start web1 www1
lab_web_start web2 www2

ip -n lb1 addr add "$LAB_VIP/32" dev eth0
lab_exec lb1 ipvsadm -R <<EOF
-A -t $LAB_VIP:80 -s rr
-a -t $LAB_VIP:80 -r $LAB_WEB1_IP:80 -i -w 1
-a -t $LAB_VIP:80 -r $LAB_WEB2_IP:80 -i -w 1
EOF
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

# Kernel 6.1 folds its per-CPU IPVS counters into the totals ipvsadm reads only when the rate
# estimator runs (every 2 s): poll, bounded, until the service shows every connection.
for ((i = 0; i < 20; i++)); do
  lab_artifact lb1-ipvs-stats.txt lab_exec lb1 ipvsadm -Ln --stats --exact
  conns=0
  while read -r proto addr c _; do
    [[ $proto == TCP && $addr == "$LAB_VIP:80" ]] && conns=$c
  done <"$LAB_OUT/lb1-ipvs-stats.txt"
  ((conns >= requests)) && break
  lab_sleep 0.5
done
lab_log "lb1 IPVS counters read after $i retries (conns=$conns)"
lab_artifact client-neigh.json ip -n client -j neigh show
lab_artifact lb1-link.json ip -n lb1 -j link show dev eth0
lab_capture final lb1
lab_log "done"
