#!/usr/bin/env bash
# The seed's walkthrough through real pods (driven by tests/tests/lab_pods.rs on the host, which
# runs the control plane, `helm install`s the chart as the README says, labels the nodes,
# applies deploy/examples/ and answers each checkpoint).
#
# Nodes: lb1 and lb2 (balancers) and web1 (the in-cluster real server) each run containerd,
# kubelet and kube-proxy in their own network namespace (tests/lab/nodes.sh), with the images
# `./dev images` built imported; every lvstun process in them is a container of a pod the
# operator's DaemonSets (or the chart's Deployment) made. web2 stays outside the cluster, "in
# another data center": `lvstun-node web --config` prepares it, as deploy/examples/ says.
#
# Checkpoints (phase/NAME, then wait for ack/NAME):
#   nodes          kubelets started; the host waits for Ready Nodes, then installs (helm,
#                  labels, examples, web1's nodeName) and waits for the pods to run
#   steady         the balancer pods programmed IPVS, lb1 holds the VIP
#   web1-down/-up  web1's web server stopped / started
#   delete-master  the host deletes lb1's balancer pod while a load runs
#   master-back    the DaemonSet's new pod on lb1 took the VIP back
#   delete-web     the host deletes web1's web pod under load and waits for its successor
#   delete-operator  the host deletes the operator's pods under load and waits for successors
#   apiserver-stop the host stops kube-apiserver; health checks act without it, and lb1's data
#                  link goes down under load: lb2 takes over
#   apiserver-start the host starts it again; status catches up (active lb2)
#   lb1-back       lb1's link and route are back: it takes the VIP back
# With LAB_LIFECYCLE=1 (the test; the demo stops above) the lifecycle follows, each part under
# a load, with the VIP's holders witnessed by the kernel's address notifications:
#   churn          the host creates, conflicts and deletes objects; daemon pods must not change
#   fast-adverts   the host sets www's adverts to 100 ms; then a CPU hog on both balancers,
#                  lb1's data link down and back, and 60 s of lb1 and lb2 cut off from each other
#   upgrade        the host runs `helm upgrade` to the second image version; an upload runs
#                  across it
#   delete-realserver / deselect-lb2 / uninstall   the host deletes web1's RealServer, removes
#                  lb2's balancer label, runs `helm uninstall`; each node must then look as in
#                  the snapshot taken before the install
# results.txt: nodes_ready_ms, pods_ready_ms, vip_mac, lb*_mac, down_ms, up_ms,
#   sysctl.NODE.NAME, failover.*, failover_vip_mac, back_ms, portreuse.*, apiserver_down_health,
#   linkdown.*, linkdown_vip_mac, lb1_back_vip, restart_web.*, restart_operator.*; lifecycle:
#   vipwatch.TAG.*, churn.*, starve.*, nicdown_ms, nicdown.*, bounce.*, bounce_vip_mac,
#   upgrade.*, upgrade.upload, teardown.*.
set -euo pipefail
# shellcheck source=tests/lab/topology.sh
. "$LAB_DIR/topology.sh"
# kube-proxy in IPVS mode on the balancer nodes, where it shares the kernel's IPVS table with
# lvstun, configured as lvstun's docs ask (nodes.sh: --ipvs-exclude-cidrs with the VIPs' range).
export LAB_KUBE_PROXY_IPVS="lb1 lb2"
# shellcheck source=tests/lab/nodes.sh
. "$LAB_DIR/nodes.sh"

NODE="$LAB_BIN/lvstun-node"
LOAD="$LAB_BIN/lvstun-lab-load"
STALLS="$LAB_BIN/lvstun-lab-stalls"
for f in "$NODE" "$LOAD" "$STALLS"; do
  [[ -x $f ]] || { lab_log "missing $f"; exit 2; }
done

DEMO="$LAB_OUT/demo.txt"
say() { printf '%s\n' "$*" >>"$DEMO"; lab_log "$*"; }
show() { # TITLE CMD...
  local title="$1"
  shift
  printf '\n$ %s\n' "$title" >>"$DEMO"
  "$@" >>"$DEMO" 2>&1 || true
}
node_headers() { # ARTIFACT: the Node: lines of a curl -i artifact
  local line
  while IFS= read -r line; do
    [[ $line == Node:* ]] && printf '%s\n' "${line%$'\r'}"
  done <"$LAB_OUT/$1"
  return 0
}
load_line() { # PREFIX
  local line r="" o="" f="" g=""
  while IFS= read -r line; do
    case "$line" in
      "$1.requests="*) r="${line#*=}" ;;
      "$1.ok="*) o="${line#*=}" ;;
      "$1.failures="*) f="${line#*=}" ;;
      "$1.longest_gap_ms="*) g="${line#*=}" ;;
    esac
  done <"$LAB_OUT/results.txt"
  printf '%s requests, %s ok, %s failed, longest gap between answers %s ms' "$r" "$o" "$f" "$g"
}
host_phase() { # NAME [SECS]
  local name="$1" secs="${2:-600}" deadline
  : >"$LAB_OUT/phase/$name"
  lab_log "checkpoint $name: waiting for the host"
  deadline=$(($(lab_now_ms) + secs * 1000))
  while [[ ! -e $LAB_OUT/ack/$name ]]; do
    (($(lab_now_ms) < deadline)) || { lab_log "the host never answered $name"; return 1; }
    lab_sleep 0.5
  done
  [[ $(<"$LAB_OUT/ack/$name") == ok ]] || { lab_log "the host refused $name: $(<"$LAB_OUT/ack/$name")"; return 1; }
  lab_log "checkpoint $name: answered"
}
has_vip() { [[ $(ip -n "$1" -4 -o addr show dev eth0) == *" $LAB_VIP/32 "* ]]; }
wait_vip() { # NS SECS
  lab_wait_until "$2" 0.1 "the VIP on $1" has_vip "$1"
}
vip_only_on() { has_vip "$1" && ! has_vip "$2"; } # NS OTHER
not_vip() { ! has_vip "$1"; }
rule() { printf -- '-a -t %s:80 -r %s:80 -i -w %s' "$LAB_VIP" "$1" "$2"; }
curl_vip() { # N ARTIFACT
  local urls=() i
  for ((i = 0; i < $1; i++)); do urls+=("http://$LAB_VIP/"); done
  lab_artifact "$2" lab_exec client curl -sS -i --max-time 10 --connect-timeout 5 \
    -H 'Connection: close' "${urls[@]}"
}
load_start() { # TAG SECS [STOP-FILE]
  local stop=()
  [[ -z ${3:-} ]] || stop=(--stop-file "$3")
  lab_bg client "load-$1" "$LOAD" --url "http://$LAB_VIP/" --interval-ms 50 \
    --duration-s "$2" --connect-timeout-ms 3000 --timeout-ms 5000 --out "$LAB_OUT/load-$1.txt" \
    "${stop[@]}"
}
load_end() { # TAG PREFIX SECS
  local line key
  lab_wait_log "load-$1" 'longest_gap_ms=*' "$3"
  while IFS= read -r line; do
    key="${line%%=*}"
    case "$key" in
      requests | ok | failures | longest_gap_ms) lab_result "$2.$key" "${line#*=}" ;;
    esac
  done <"$LAB_OUT/logs/load-$1.log"
  lab_stop "load-$1"
}

# --- the lifecycle (LAB_LIFECYCLE=1, the test; the demo stops at the walkthrough) -------------
# Each part runs a load through it and witnesses who holds the VIP from the kernel's own
# address notifications (lab_vip_watch_*), which the host side folds into transitions.
watch_start() { lab_vip_watch_start "$1" lb1 lb2; }
watch_stop() { lab_vip_watch_stop "$1" lb1 lb2; }
# phase_end TAG: the load and the VIP watch of TAG end (load results under the prefix TAG).
phase_end() {
  : >"$LAB_OUT/stop-$1"
  load_end "$1" "$1" 120
  watch_stop "$1"
}
# vip_back_to_lb1 KEY T SECS: records KEY as the ms from T until the VIP is on lb1 alone (none
# if not within SECS).
vip_back_to_lb1() {
  if lab_wait_until "$3" 0.2 "the VIP on lb1 alone" vip_only_on lb1 lb2; then
    lab_result "$1" $(($(lab_now_ms) - $2))
  else
    lab_result "$1" none
  fi
}
# same_as_before NS: NS's snapshot equals the one taken before the install (diff in
# snapshot/NS-diff.txt).
same_as_before() {
  lab_node_snapshot "$1" "$LAB_OUT/snapshot/$1-after.txt"
  diff -u "$LAB_OUT/snapshot/$1-before.txt" "$LAB_OUT/snapshot/$1-after.txt" \
    >"$LAB_OUT/snapshot/$1-diff.txt"
}
# teardown_result NS KEY: waits (bounded) until NS is as before; KEY=same or differs.
teardown_result() {
  if lab_wait_until 120 2 "$1 as before the install" same_as_before "$1"; then
    lab_result "$2" same
  else
    lab_result "$2" differs
  fi
  cp "$LAB_OUT/snapshot/$1-diff.txt" "$LAB_OUT/snapshot/$2.diff"
}
# balancer_pids NS: the pids of the balancer container's main process in NS (`lvstun-node
# balancer`, not its `prepare` init container), read from /proc without forking.
balancer_pids() {
  local pid args
  for pid in $(ip netns pids "$1"); do
    [[ -r /proc/$pid/cmdline ]] || continue
    mapfile -d '' args <"/proc/$pid/cmdline" 2>/dev/null || continue
    # A process that ends between the listing and the read leaves an empty cmdline.
    ((${#args[@]} > 0)) || continue
    [[ ${args[0]##*/} == lvstun-node && ${args[1]:-} == balancer && ${args[2]:-} != prepare ]] &&
      printf '%s\n' "$pid"
  done
  return 0
}
# new_balancer NS OLD-PIDS: a balancer process runs in NS that is none of OLD-PIDS.
new_balancer() {
  local pid
  for pid in $(balancer_pids "$1"); do
    [[ " $2 " == *" $pid "* ]] || return 0
  done
  return 1
}
hog_start() { # SECS: two busy loops in each balancer's namespace (the VM has 2 vCPUs)
  local ns i
  for ns in lb1 lb2; do
    for i in 1 2; do
      lab_bg "$ns" "hog-$ns-$i" timeout "$1" bash -c 'while :; do :; done'
    done
  done
}
hog_stop() {
  local ns i
  for ns in lb1 lb2; do for i in 1 2; do lab_stop "hog-$ns-$i"; done; done
}
# balancer_metric NS NAME: the value of metric NAME on NS's balancer pod (its health port on the
# node's loopback), `none` without one.
balancer_metric() {
  local line
  while IFS= read -r line; do
    [[ $line == "$2 "* ]] && { printf '%s' "${line##* }"; return 0; }
  done < <(lab_exec "$1" curl -s --max-time 5 http://127.0.0.1:9781/metrics 2>/dev/null || true)
  printf none
}
# client_arp_on NS: the client's neighbour entry for the VIP names NS's MAC.
client_arp_on() {
  [[ $(ip -n client -j neigh show "$LAB_VIP") == *"\"lladdr\":\"$(lab_mac "$1" eth0)\""* ]]
}

# outage T-STOP (the test, inside the walkthrough's section 6): the API server stays down for
# 5 minutes from T-STOP (ms). Steady state first, under load, with two busy loops per balancer
# starving them of CPU for 20 s (adverts every 100 ms), a witness logging the times a vCPU did
# not run at all (lvstun-lab-stalls): no VIP move, no failed request. Then lb1's balancer
# process is killed, the API server still down: lb2 takes over and lb1's VIP goes by its kernel
# lifetime; lb1's new process cannot read its VirtualServices until the API server is back
# (outage_over).
CRASH_T=0
outage() {
  local t_stop="$1" old1 takeover stale
  say ""
  say "== 6a. the API server stays down 5 minutes, adverts every 100 ms: steady state under load,"
  say "   with a CPU hog starving both balancers for 20 s =="
  watch_start outage
  load_start outage 400 "$LAB_OUT/stop-outage"
  lab_sleep 100
  # The witness of the times a vCPU did not run at all (the host's doing, not the hog's):
  # logs/stalls.log, read by the test to tell the two apart.
  lab_bg lb1 stalls "$STALLS" --secs 30
  lab_sleep 1
  lab_result starve.start_ms "$(lab_now_ms)"
  hog_start 20
  lab_sleep 21
  hog_stop
  lab_result starve.end_ms "$(lab_now_ms)"
  lab_sleep 1
  lab_stop stalls
  until (($(lab_now_ms) - t_stop >= 240000)); do lab_sleep 1; done
  phase_end outage
  say "   $(load_line outage)"
  # The balancers' logs of the outage, before the kill below replaces lb1's container (the
  # kubelet keeps only the last dead one's).
  lab_nodes_save_logs after-outage

  say ""
  say "== 6b. lb1's balancer process killed (kill -9), the API server still down: lb2 takes over,"
  say "   lb1's VIP goes by its own lifetime =="
  watch_start crash
  load_start crash 480 "$LAB_OUT/stop-crash"
  lab_sleep 3
  old1="$(balancer_pids lb1)"
  [[ -n $old1 ]] || { lab_log "no balancer process on lb1"; return 1; }
  # shellcheck disable=SC2086 # one pid per word
  kill -KILL $old1
  CRASH_T=$(lab_now_ms)
  wait_vip lb2 30
  takeover=$(($(lab_now_ms) - CRASH_T))
  lab_result crash.takeover_ms "$takeover"
  lab_wait_until 30 0.1 "lb1's VIP gone" not_vip lb1 || true
  stale=$(($(lab_now_ms) - CRASH_T))
  lab_result crash.stale_vip_ms "$stale"
  say "   lb2 held the VIP $takeover ms after the kill; lb1's copy went after $stale ms"
  until (($(lab_now_ms) - t_stop >= 300000)); do lab_sleep 1; done
  lab_result outage.api_down_ms $(($(lab_now_ms) - t_stop))
}
# outage_over: the API server is back; lb1's balancer reads its VirtualServices, settles and
# takes the VIP back.
outage_over() {
  vip_back_to_lb1 crash.back_ms "$CRASH_T" 240
  lab_sleep 3
  phase_end crash
  say "   the API server back after 5 minutes: lb1's new balancer process took the VIP back"
  say "   $(($(lab_now_ms) - CRASH_T)) ms after the kill; $(load_line crash)"
}

lifecycle() {
  say ""
  say "== 8. CR churn under load: a VirtualService with a new selector, one deleted, a RealServer"
  say "   on a new node (a balancer: left out), one in Conflict: no daemon pod restarts, no VIP"
  say "   moves =="
  watch_start churn
  load_start churn 60 "$LAB_OUT/stop-churn"
  lab_sleep 3
  host_phase churn 300
  lab_sleep 3
  phase_end churn
  say "   $(load_line churn)"

  say ""
  say "== 9. kube-proxy in IPVS mode on lb1 and lb2 has run beside lvstun from the start with"
  say "   --ipvs-exclude-cidrs 192.0.2.0/24, as the docs ask, syncing every 10 s: lvstun's services"
  say "   survived. lb2's kube-proxy restarted without it deletes them: lvstun says so =="
  local ns
  for ns in lb1 lb2; do
    lab_result "neighbour.$ns.kube_ipvs0" "$(ip -n "$ns" link show kube-ipvs0 >/dev/null 2>&1 && echo yes || echo no)"
    lab_result "neighbour.$ns.deletions_before" "$(balancer_metric "$ns" lvstun_balancer_foreign_deletions_total)"
  done
  watch_start neighbour
  load_start neighbour 180 "$LAB_OUT/stop-neighbour"
  lab_sleep 3
  lab_node_kube_proxy lb2 none
  host_phase foreign-deletion 300
  lab_result neighbour.lb2.deletions_after "$(balancer_metric lb2 lvstun_balancer_foreign_deletions_total)"
  lab_node_kube_proxy lb2
  lab_wait_rule lb2 "$(rule "$LAB_WEB2_IP" 1)" 60
  lab_sleep 12
  lab_result neighbour.lb2.restored "$(lab_has_rule lb2 "$(rule "$LAB_WEB2_IP" 1)" && echo yes || echo no)"
  phase_end neighbour
  say "   lb2's deletions counted: $(balancer_metric lb2 lvstun_balancer_foreign_deletions_total);"
  say "   $(load_line neighbour)"

  say ""
  say "== 10. the balancers cut off from each other for 60 s (bridge ports isolated: each still"
  say "   reaches the client and the router), then healed =="
  watch_start bounce
  lab_neigh before-bounce
  load_start bounce 130 "$LAB_OUT/stop-bounce"
  lab_sleep 3
  bridge link set dev fr-lb1 isolated on
  bridge link set dev fr-lb2 isolated on
  lab_sleep 60
  bridge link set dev fr-lb1 isolated off
  bridge link set dev fr-lb2 isolated off
  t=$(lab_now_ms)
  if lab_wait_until 30 0.2 "the VIP on lb1 alone after the heal" vip_only_on lb1 lb2; then
    lab_result bounce.heal_ms $(($(lab_now_ms) - t))
  else
    lab_result bounce.heal_ms none
  fi
  # The Master repeats its gratuitous ARP every 10 s: the client learns lb1's MAC again even
  # when lb1 never heard lb2 after the heal.
  if lab_wait_until 25 0.5 "the client's ARP entry on lb1" client_arp_on lb1; then
    lab_result bounce.arp_ms $(($(lab_now_ms) - t))
  else
    lab_result bounce.arp_ms none
  fi
  lab_neigh after-bounce
  lab_result bounce_vip_mac "$(lab_vip_mac after-bounce)"
  phase_end bounce
  say "   one holder (lb1) again after the heal; $(load_line bounce)"

  say ""
  say "== 11. both balancer processes killed at once (kill -9): both cold-start together =="
  watch_start cold
  load_start cold 200 "$LAB_OUT/stop-cold"
  lab_sleep 3
  local old1 old2 t1="" t2="" i
  old1="$(balancer_pids lb1)"
  old2="$(balancer_pids lb2)"
  if [[ -z $old1 || -z $old2 ]]; then
    lab_log "no balancer process found: lb1 '$old1' lb2 '$old2'"
    return 1
  fi
  # shellcheck disable=SC2086 # one pid per word
  kill -KILL $old1 $old2
  t=$(lab_now_ms)
  for ((i = 0; i < 1800 && (${#t1} == 0 || ${#t2} == 0); i++)); do
    [[ -z $t1 ]] && new_balancer lb1 "$old1" && t1=$(lab_now_ms)
    [[ -z $t2 ]] && new_balancer lb2 "$old2" && t2=$(lab_now_ms)
    lab_sleep 0.1
  done
  lab_result cold.lb1_restart_ms $((${t1:-0} - t))
  lab_result cold.lb2_restart_ms $((${t2:-0} - t))
  vip_back_to_lb1 cold.one_holder_ms "$t" 180
  lab_sleep 5
  phase_end cold
  say "   new processes $((${t1:-0} - t)) ms (lb1) and $((${t2:-0} - t)) ms (lb2) after the kill;"
  say "   $(load_line cold)"

  say ""
  say "== 12. web1's net.ipv4.conf.all.rp_filter set to 1 (strict, as CIS benchmarks ask): its web"
  say "   pod says what to change, and web1 leaves the rotation =="
  watch_start rpfilter
  load_start rpfilter 180 "$LAB_OUT/stop-rpfilter"
  lab_sleep 3
  lab_sysctl web1 net.ipv4.conf.all.rp_filter=1
  host_phase rp-filter 300
  lab_wait_rule lb1 "$(rule "$LAB_WEB1_IP" 0)" 60
  lab_sleep 3
  phase_end rpfilter
  say "   $(load_line rpfilter)"

  lab_nodes_save_logs before-upgrade

  say ""
  say "== 13. helm upgrade to a second image version under load, an upload running across it;"
  say "   web.vipDevice=tunl0, the fix web1's status named =="
  head -c 1200000 /dev/urandom >"$LAB_OUT/upload.bin"
  watch_start upgrade
  load_start upgrade 480 "$LAB_OUT/stop-upgrade"
  lab_upload_start upgrade 10k "$LAB_OUT/upload.bin"
  lab_sleep 3
  host_phase upgrade 600
  lab_upload_result upgrade
  lab_result upgrade.upload "$LAB_UPLOAD_RESULT"
  lab_wait_rule lb1 "$(rule "$LAB_WEB1_IP" 1)" 60
  lab_result rpfilter.vip_on_tunl0 "$(ip -n web1 -4 -o addr show dev tunl0 | grep -q " $LAB_VIP/32 " && echo yes || echo no)"
  curl_vip 12 client-curl-rpfilter.txt
  lab_result rpfilter.www1_answers "$(node_headers client-curl-rpfilter.txt | grep -c 'Node: www1' || true)"
  lab_sleep 3
  phase_end upgrade
  # The host's setting is the test's to undo, before the teardown compares web1 with its
  # snapshot.
  lab_sysctl web1 net.ipv4.conf.all.rp_filter=0
  say "   $(load_line upgrade); the upload: $LAB_UPLOAD_RESULT (curl exit, HTTP code, bytes);"
  say "   web1 back in rotation with all.rp_filter=1, its VIPs on tunl0"

  say ""
  say "== 14. lvstun leaves each node as it found it: web1's RealServer deleted, lb2 unlabelled,"
  say "   then helm uninstall =="
  host_phase delete-realserver
  teardown_result web1 teardown.realserver.web1
  host_phase deselect-lb2
  teardown_result lb2 teardown.deselect.lb2
  lab_nodes_save_logs before-uninstall
  host_phase uninstall 600
  teardown_result lb1 teardown.uninstall.lb1
  for ns in lb2 web1; do teardown_result "$ns" "teardown.uninstall.$ns"; done
  say "   web1 after its RealServer was deleted, lb2 after it was unlabelled, every node after"
  say "   helm uninstall: compared with the snapshot taken before the install (snapshot/)"
}

say "lvstun walkthrough through real pods: the classic LVS-TUN recipe on a real kernel (Debian"
say "6.1 under qemu). lb1, lb2 and web1 are Kubernetes nodes (containerd, kubelet, kube-proxy in"
say "each node's network namespace) joined to the control plane on the host; the operator and"
say "the node daemons run as pods of the images ./dev images built. web2 is outside the cluster,"
say "in another subnet, prepared by lvstun-node web --config. VIP 192.0.2.100:80, mh on address and port, ipip."
lab_modules ip_vs ip_vs_mh ip_vs_rr ipip
lab_topology_up
lab_mgmt_up
lab_nodes_prepare
t0=$(lab_now_ms)
lab_nodes_up "lb1:$LAB_LB1_IP" "lb2:$LAB_LB2_IP" "web1:$LAB_WEB1_IP"
lab_result nodes_started_ms $(($(lab_now_ms) - t0))
for ns in lb1 lb2 web1 web2; do lab_result "${ns}_mac" "$(lab_mac "$ns" eth0)"; done

# The application on both real servers, and web2's own preparation (outside the cluster).
lab_web_start web1 www1
lab_web_start web2 www2
cat >"$LAB_OUT/web2-config.yaml" <<EOF
$(<"$LAB_REPO/deploy/examples/virtualservice.yaml")
---
$(<"$LAB_REPO/deploy/examples/realservers.yaml")
EOF
lab_bg web2 web-web2 "$NODE" web --config "$LAB_OUT/web2-config.yaml" --real-server web2 \
  --state-dir "$LAB_OUT/state-web2" --health-port 9100
lab_wait_log web-web2 "*reconciled: writes=* ready=true*" 120

# What every node looks like before lvstun is installed: each must look so again once lvstun
# is gone from it (the lifecycle part, at the end).
LIFECYCLE="${LAB_LIFECYCLE:-0}"
if [[ $LIFECYCLE == 1 ]]; then
  mkdir -p "$LAB_OUT/snapshot"
  for ns in lb1 lb2 web1; do lab_node_snapshot "$ns" "$LAB_OUT/snapshot/$ns-before.txt"; done
fi

say ""
say "== 1. three nodes joined; helm install, node labels, kubectl apply -f deploy/examples/ =="
host_phase nodes 900
lab_result pods_ready_ms $(($(lab_now_ms) - t0))

wait_vip lb1 300
lab_wait_rule lb1 "$(rule "$LAB_WEB1_IP" 1)" 180
lab_wait_rule lb1 "$(rule "$LAB_WEB2_IP" 1)" 60
lab_wait_rule lb2 "$(rule "$LAB_WEB2_IP" 1)" 60
lab_result steady_ms $(($(lab_now_ms) - t0))
has_vip lb2 && { lab_log "both balancers hold the VIP"; exit 1; }
for ns in lb1 lb2; do
  for s in expire_nodest_conn sloppy_tcp; do
    lab_result "sysctl.$ns.$s" "$(lab_exec "$ns" cat "/proc/sys/net/ipv4/vs/$s")"
  done
done
# Where the daemons' health endpoints listen (issue 15): loopback and the node's own address,
# never 0.0.0.0, so the Master does not answer on its VIP.
for ns in lb1 lb2 web1; do
  lab_result "listen.$ns" "$(lab_exec "$ns" ss -Hltn | awk '$4 ~ /:978[12]$/ { print $4 }' | sort | paste -sd' ' -)"
done
if lab_exec client curl -s -o /dev/null --max-time 3 "http://$LAB_VIP:9781/healthz"; then
  lab_result health_on_vip answered
else
  lab_result health_on_vip refused
fi
say "   the balancer pods programmed IPVS and lb1 holds the VIP, $(($(lab_now_ms) - t0)) ms after the kubelets started"
show "sysctl net.ipv4.vs.expire_nodest_conn net.ipv4.vs.sloppy_tcp   (on lb1, set by the balancer pod)" \
  lab_exec lb1 sysctl net.ipv4.vs.expire_nodest_conn net.ipv4.vs.sloppy_tcp
host_phase steady

# --- both real servers, direct server return, ARP ---------------------------------------------
# mh hashes each connection's client port: 12 connections reach both servers unless all 12 hash
# alike (2 in 4096).
curl_vip 12 client-curl.txt
for ((i = 0; i < 30; i++)); do
  stats="$(lab_exec lb1 ipvsadm -Ln --stats --exact -t "$LAB_VIP:80")"
  [[ $stats =~ $LAB_VIP:80[[:space:]]+([0-9]+) ]] && ((BASH_REMATCH[1] >= 12)) && break
  lab_sleep 0.2
done
lab_artifact lb1-ipvs-stats.txt lab_exec lb1 ipvsadm -Ln --stats --exact
lab_neigh steady
lab_result vip_mac "$(lab_vip_mac steady)"
say ""
say "== 2. both web servers through ipip tunnels, replies straight from the web nodes =="
show "ipvsadm -L -n   (on lb1)" lab_exec lb1 ipvsadm -L -n
show "ipvsadm -L -n --stats   (on lb1: OutPkts stay 0 under direct server return)" \
  lab_exec lb1 ipvsadm -L -n --stats
show "for i in 1 2 3 4 5 6; do curl -si http://192.0.2.100/ | grep Node; done" \
  node_headers client-curl.txt
show "ip neigh show 192.0.2.100   (on the client: lb1's MAC $(lab_mac lb1 eth0))" \
  lab_exec client ip neigh show "$LAB_VIP"

# --- health, and a client port reused while its old entry points at the stopped server -------------
# In TUN mode IPVS sees only the client's half of a connection, so its entry stays (FIN_WAIT) for
# two minutes after the connection ends. A SYN from the same client port then matches it; only
# with expire_nodest_conn=1 (set by the balancer pod) does the kernel reschedule it away from a
# real server at weight 0 instead of sending it to the dead one.
reuse_port=""
for port in {40001..40016}; do
  lab_artifact "portreuse-$port-before.txt" lab_exec client curl -sS -i --max-time 10 \
    --connect-timeout 5 --local-port "$port" -H 'Connection: close' "http://$LAB_VIP/" || true
  if [[ $(node_headers "portreuse-$port-before.txt") == "Node: www1" ]]; then
    reuse_port=$port
    break
  fi
done
lab_result portreuse.port "${reuse_port:-none}"
lab_stop www1
t=$(lab_now_ms)
lab_wait_rule lb1 "$(rule "$LAB_WEB1_IP" 0)" 30
lab_result down_ms $(($(lab_now_ms) - t))
say ""
say "== 3. web1's web server stopped: out of rotation after $(($(lab_now_ms) - t)) ms (weight 0) =="
show "ipvsadm -L -n   (on lb1)" lab_exec lb1 ipvsadm -L -n
if [[ -n $reuse_port ]]; then
  lab_artifact lb1-conns-portreuse.txt lab_exec lb1 ipvsadm -Lnc
  lab_artifact portreuse-after.txt lab_exec client curl -sS -i --max-time 10 \
    --connect-timeout 5 --local-port "$reuse_port" -H 'Connection: close' "http://$LAB_VIP/" || true
  after="$(node_headers portreuse-after.txt)"
  lab_result portreuse.after "${after:-no answer}"
  say "   a new connection from client port $reuse_port, whose old entry still names web1: answered by ${after:-nobody}"
fi
host_phase web1-down
curl_vip 4 client-curl-down.txt
show "for i in 1 2 3 4; do curl -si http://192.0.2.100/ | grep Node; done" \
  node_headers client-curl-down.txt
t=$(lab_now_ms)
lab_web_start web1 www1
lab_wait_rule lb1 "$(rule "$LAB_WEB1_IP" 1)" 30
lab_result up_ms $(($(lab_now_ms) - t))
say "   started again: back in rotation after $(($(lab_now_ms) - t)) ms"
host_phase web1-up

# --- the Master's pod deleted ------------------------------------------------------------------------
load_start fo 40
lab_sleep 3
lab_neigh before-failover
t=$(lab_now_ms)
host_phase delete-master
wait_vip lb2 60
failover_ms=$(($(lab_now_ms) - t))
lab_result failover_ms "$failover_ms"
lab_neigh after-failover
lab_result failover_vip_mac "$(lab_vip_mac after-failover)"
# The DaemonSet starts a new pod on lb1; it takes the VIP back (preempt) once it forwards.
t=$(lab_now_ms)
wait_vip lb1 240
lab_result back_ms $(($(lab_now_ms) - t))
load_end fo failover 120
say ""
say "== 4. lb1's balancer pod deleted (kubectl delete pod) under a steady load: lb2 took the VIP"
say "   $failover_ms ms after the delete; the DaemonSet's new pod on lb1 took it back after it"
say "   programmed its table. Client outage measured by one load process: $(load_line failover)"
host_phase master-back

# --- the web pod and the operator's pods deleted under load ----------------------------------------
load_start rw 40
lab_sleep 3
host_phase delete-web
load_end rw restart_web 120
load_start ro 40
lab_sleep 3
host_phase delete-operator
load_end ro restart_operator 120
say ""
say "== 5. pods deleted under a steady load (a request every 50 ms from the client) =="
say "   web1's web pod (the DaemonSet starts a new one, which adopts web1's state): $(load_line restart_web)"
say "   the operator's pods (the Deployment starts new ones; a new leader takes over): $(load_line restart_operator)"

# --- the API server stopped: the data plane does not need it ---------------------------------------
# The test first sets www's adverts to 100 ms (the lifecycle's settings from here on).
[[ $LIFECYCLE == 1 ]] && host_phase fast-adverts
host_phase apiserver-stop
t_stop=$(lab_now_ms)
lab_stop www2
lab_wait_rule lb1 "$(rule "$LAB_WEB2_IP" 0)" 30
lab_web_start web2 www2
lab_wait_rule lb1 "$(rule "$LAB_WEB2_IP" 1)" 30
lab_result apiserver_down_health "weight 0 then 1"
say ""
say "== 6. kube-apiserver stopped on the host: web2 stopped and started, weight 0 then 1 again,"
say "   decided by the balancer pods alone =="
show "ipvsadm -L -n   (on lb1)" lab_exec lb1 ipvsadm -L -n
[[ $LIFECYCLE == 1 ]] && outage "$t_stop"
host_phase apiserver-start
[[ $LIFECYCLE == 1 ]] && outage_over

# --- the Master's data link down, the API server up ----------------------------------------------
watch_start nicdown
load_start ld 120 "$LAB_OUT/stop-ld"
lab_sleep 3
# The time just before the command: lb1's daemon may drop its VIP before `ip` returns.
t=$(lab_now_ms)
lab_result linkdown.down_ms "$t"
ip -n lb1 link set eth0 down
wait_vip lb2 30
linkdown_ms=$(($(lab_now_ms) - t))
lab_result linkdown_ms "$linkdown_ms"
# lb1's balancer follows its link: the VIP leaves the downed link at once, not when it returns.
if lab_wait_until 10 0.05 "lb1's VIP gone from its downed link" not_vip lb1; then
  lab_result linkdown.lb1_vip_gone_ms $(($(lab_now_ms) - t))
else
  lab_result linkdown.lb1_vip_gone_ms none
fi
lab_neigh after-linkdown
lab_result linkdown_vip_mac "$(lab_vip_mac after-linkdown)"
say ""
say "== 7. lb1's data link down under load (its pod and the API server fine): lb2 took the VIP"
say "   after $linkdown_ms ms =="
show "ipvsadm -L -n   (on lb2)" lab_exec lb2 ipvsadm -L -n
host_phase linkdown
# The link comes back without lb1's default route (the kernel drops routes through a link that
# goes down): lb1 reaches no real server and stays Backup until the route is restored.
ip -n lb1 link set eth0 up
lab_sleep 8
if vip_only_on lb2 lb1; then
  lab_result lb1_without_route "backup, VIP stays on lb2"
else
  lab_result lb1_without_route "lb1=$(has_vip lb1 && echo yes || echo no) lb2=$(has_vip lb2 && echo yes || echo no)"
fi
ip -n lb1 route replace default via "$LAB_ROUTER_FRONT_IP" dev eth0
t=$(lab_now_ms)
if lab_wait_until 90 0.2 "the VIP on lb1 alone" vip_only_on lb1 lb2; then
  lab_result lb1_back_vip lb1
else
  lab_result lb1_back_vip "lb1=$(has_vip lb1 && echo yes || echo no) lb2=$(has_vip lb2 && echo yes || echo no)"
fi
back_ms=$(($(lab_now_ms) - t))
lab_sleep 3
: >"$LAB_OUT/stop-ld"
load_end ld linkdown 120
watch_stop nicdown
say "   its link back without its route, lb1 stayed Backup; route back: it took the VIP back"
say "   after $back_ms ms. $(load_line linkdown)"
host_phase lb1-back
[[ $LIFECYCLE == 1 ]] && lifecycle
lab_nodes_save_logs final
lab_capture final lb1 lb2 web1 web2 client
lab_log "done"
