#!/usr/bin/env bash
# The recipe end to end with the control plane (driven by tests/tests/lab_cluster.rs on the
# host, which runs the API server, the chart and the operator, and answers each checkpoint).
#
# The node daemons run here exactly as the operator's DaemonSets say: $LAB_OUT/launch/NODE.args
# and NODE.env are the pod's arguments and environment ($(NODE_NAME) expanded as the kubelet
# would), NODE.token the DaemonSet ServiceAccount's token; the kubeconfig points at the API
# server through the management link (127.0.0.1:$LAB_MGMT_GUEST_PORT in each namespace, relayed
# to the host's loopback). Each daemon gets its own /run/lvstun (the DaemonSet's hostPath) in a
# private mount namespace.
#
# Checkpoints: the script writes phase/NAME and waits for the host's ack/NAME.
#   steady            daemons up, VIP on lb1, both destinations weight 1
#   web1-down/-up     web1's server stopped / started (scenario 4)
#   restart-operator  the host kills and restarts the operator under load (scenario 6)
#   apiserver-stop    the host stops kube-apiserver; then health checks and a hard failover
#                     of lb1 happen without it (scenarios 5 and 7)
#   apiserver-start   the host starts it again and checks that status caught up
#   lb1-back          lb1 returns and takes the VIP back (preempt)
# results.txt: vip_mac lb1_mac lb2_mac web1_mac web2_mac, down_ms up_ms, restart_*.{requests,
# ok,failures,longest_gap_ms}, apiserver_down_health, failover.*, failover_vip_mac,
# lb1_back_vip. Artifacts: client-curl.txt, client-curl-down.txt, lb1-ipvs-stats.txt,
# witness-*.txt, neigh-*.json, logs/*.log (daemons' JSON logs).
set -euo pipefail
# shellcheck source=tests/lab/topology.sh
. "$LAB_DIR/topology.sh"

NODE="$LAB_BIN/lvstun-node"
LOAD="$LAB_BIN/lvstun-lab-load"
LAUNCH="$LAB_OUT/launch"
for f in "$NODE" "$LOAD" "$LAUNCH/lb1.args" "$LAUNCH/web1.args"; do
  [[ -e $f ]] || { lab_log "missing $f"; exit 2; }
done

# The walkthrough `lvstun-lab demo` prints (the host adds `kubectl get` at checkpoints).
DEMO="$LAB_OUT/demo.txt"
say() { printf '%s\n' "$*" >>"$DEMO"; lab_log "$*"; }
show() { # TITLE CMD...: the command's output under a "$ TITLE" line
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
load_line() { # PREFIX: one line summing a load run from results.txt
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

# host_phase NAME [SECS]: tell the host driver we reached NAME; wait for its answer.
host_phase() {
  local name="$1" secs="${2:-400}" deadline
  : >"$LAB_OUT/phase/$name"
  lab_log "checkpoint $name: waiting for the host"
  deadline=$(($(lab_now_ms) + secs * 1000))
  while [[ ! -e $LAB_OUT/ack/$name ]]; do
    (($(lab_now_ms) < deadline)) || { lab_log "the host never answered $name"; return 1; }
    lab_sleep 0.25
  done
  lab_log "checkpoint $name: answered"
}

# start_node NS NAME: the DaemonSet's pod for node NS, as the kubelet would run it.
start_node() {
  local ns="$1" name="$2" kube="$LAUNCH/$1.kubeconfig" hostpath="$LAB_OUT/hostpath-$1"
  local -a args env
  mapfile -t args <"$LAUNCH/$ns.args"
  mapfile -t env <"$LAUNCH/$ns.env"
  if [[ ! -e $kube ]]; then
    cat >"$kube" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: https://127.0.0.1:$LAB_MGMT_GUEST_PORT
    insecure-skip-tls-verify: true
users:
- name: $ns
  user:
    token: $(<"$LAUNCH/$ns.token")
contexts:
- name: lab
  context: {cluster: lab, user: $ns}
current-context: lab
EOF
  fi
  mkdir -p "$hostpath" /run/lvstun
  # shellcheck disable=SC2016 # expanded by the inner bash
  lab_bg "$ns" "$name" env -i PATH="$PATH" "${env[@]}" KUBECONFIG="$kube" \
    unshare --mount --propagation private bash -c 'mount --bind "$1" /run/lvstun && shift && exec "$@"' \
    _ "$hostpath" "$NODE" "${args[@]}"
}

has_rule() { # NS RULE-PREFIX: some line of ipvsadm -Sn in NS starts with it
  local l
  while IFS= read -r l; do
    [[ $l == "$2"* ]] && return 0
  done < <(lab_exec "$1" ipvsadm -Sn)
  return 1
}
wait_rule() { # NS RULE-PREFIX SECS
  local deadline=$(($(lab_now_ms) + $3 * 1000))
  while (($(lab_now_ms) < deadline)); do
    has_rule "$1" "$2" && return 0
    lab_sleep 0.2
  done
  lab_log "timed out after $3 s waiting for rule '$2' in $1"
  return 1
}
has_vip() { # NS: the VIP is on NS's eth0
  [[ $(ip -n "$1" -4 -o addr show dev eth0) == *" $LAB_VIP/32 "* ]]
}
wait_vip() { # NS SECS: wait until NS holds the VIP
  local deadline=$(($(lab_now_ms) + $2 * 1000))
  while (($(lab_now_ms) < deadline)); do
    has_vip "$1" && return 0
    lab_sleep 0.2
  done
  lab_log "timed out after $2 s waiting for the VIP on $1"
  return 1
}
rule() { # WEB-IP WEIGHT: the tunnel destination's line in ipvsadm -Sn
  printf -- '-a -t %s:80 -r %s:80 -i -w %s' "$LAB_VIP" "$1" "$2"
}
curl_vip() { # N ARTIFACT: N requests to the VIP from the client, one curl process
  local urls=() i
  for ((i = 0; i < $1; i++)); do urls+=("http://$LAB_VIP/"); done
  lab_artifact "$2" lab_exec client curl -sS -i --max-time 10 --connect-timeout 5 \
    -H 'Connection: close' "${urls[@]}"
}
# load_start TAG SECS: one long-lived load process from the client (a request every 50 ms).
load_start() {
  lab_bg client "load-$1" "$LOAD" --url "http://$LAB_VIP/" --interval-ms 50 \
    --duration-s "$2" --connect-timeout-ms 3000 --timeout-ms 5000 --out "$LAB_OUT/load-$1.txt"
}
# load_end TAG PREFIX SECS: wait for its summary; results as PREFIX.KEY.
load_end() {
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

say "lvstun walkthrough: the classic LVS-TUN recipe on a real kernel (Debian 6.1 under qemu),"
say "driven by the Kubernetes control plane on the host. client, lb1, lb2 and a router share"
say "192.0.2.0/24; web1 (198.51.100.10) and web2 (198.51.100.130) sit behind the router, as in"
say "another data center. VIP 192.0.2.100:80, round robin, ipip tunnels. The node daemons run as"
say "the operator's DaemonSets say, with their ServiceAccount tokens, over a management link."
lab_modules ip_vs ip_vs_rr ipip # ipip first: every namespace made after it gets a tunl0
lab_topology_up
lab_mgmt_up
for ns in lb1 lb2 web1 web2; do
  lab_mgmt_expose "$ns"
done
lab_wait_tcp lb1 127.0.0.1 "$LAB_MGMT_GUEST_PORT" 30
lab_result lb1_mac "$(lab_mac lb1 eth0)"
lab_result lb2_mac "$(lab_mac lb2 eth0)"
lab_result web1_mac "$(lab_mac web1 eth0)"
lab_result web2_mac "$(lab_mac web2 eth0)"

# --- the pods: web daemons on web1/web2, balancers on lb1/lb2 ---------------------------------
lab_web_start web1 www1
lab_web_start web2 www2
start_node web1 web-web1
start_node web2 web-web2
start_node lb1 balancer-lb1
lab_sleep 2 # lb1 first: it wins the first election without a start-up race
start_node lb2 balancer-lb2
t0=$(lab_now_ms)
wait_vip lb1 120
wait_rule lb1 "$(rule "$LAB_WEB1_IP" 1)" 120
wait_rule lb1 "$(rule "$LAB_WEB2_IP" 1)" 60
wait_rule lb2 "$(rule "$LAB_WEB2_IP" 1)" 60
lab_result ready_ms $(($(lab_now_ms) - t0))
has_vip lb2 && { lab_log "both balancers hold the VIP"; exit 1; }
lab_artifact witness-lb1.txt lab_exec lb1 ipvsadm -Ln
lab_artifact witness-lb2.txt lab_exec lb2 ipvsadm -Ln
say ""
say "== 1. the pods are up: lb1 won the VRRP election and holds the VIP ($(($(lab_now_ms) - t0)) ms) =="
host_phase steady

# --- scenarios 2 and 3: round robin, direct server return, ARP --------------------------------
curl_vip 6 client-curl.txt
# IPVS sums its per-CPU counters every 2 s (the rate estimator): wait for them to show.
for ((i = 0; i < 30; i++)); do
  stats="$(lab_exec lb1 ipvsadm -Ln --stats --exact -t "$LAB_VIP:80")"
  [[ $stats =~ $LAB_VIP:80[[:space:]]+([0-9]+) ]] && ((BASH_REMATCH[1] >= 6)) && break
  lab_sleep 0.2
done
lab_artifact lb1-ipvs-stats.txt lab_exec lb1 ipvsadm -Ln --stats --exact
lab_neigh steady
lab_result vip_mac "$(lab_vip_mac steady)"
say ""
say "== 2. round robin through ipip tunnels, replies straight from the web nodes =="
show "ipvsadm -L -n   (on lb1: Tunnel forwarding, OutPkts stay 0 under direct server return)" \
  lab_exec lb1 ipvsadm -L -n
show "ipvsadm -L -n --stats   (on lb1)" lab_exec lb1 ipvsadm -L -n --stats
show "for i in 1 2 3 4 5 6; do curl -si http://192.0.2.100/ | grep Node; done" \
  node_headers client-curl.txt
show "ip neigh show 192.0.2.100   (on the client: lb1's MAC $(lab_mac lb1 eth0), no web node's)" \
  lab_exec client ip neigh show "$LAB_VIP"

# --- scenario 4: health -------------------------------------------------------------------------
lab_stop www1
t=$(lab_now_ms)
wait_rule lb1 "$(rule "$LAB_WEB1_IP" 0)" 30
lab_result down_ms $(($(lab_now_ms) - t))
say ""
say "== 3. web1's web server stopped: the health check (GET /healthcheck.html, every 2 s) =="
say "   took web1 out of rotation after $(($(lab_now_ms) - t)) ms (weight 0; existing connections finish)"
show "ipvsadm -L -n   (on lb1)" lab_exec lb1 ipvsadm -L -n
host_phase web1-down
curl_vip 4 client-curl-down.txt
show "for i in 1 2 3 4; do curl -si http://192.0.2.100/ | grep Node; done" \
  node_headers client-curl-down.txt
t=$(lab_now_ms)
lab_web_start web1 www1
wait_rule lb1 "$(rule "$LAB_WEB1_IP" 1)" 30
lab_result up_ms $(($(lab_now_ms) - t))
say "   started again: back in rotation after $(($(lab_now_ms) - t)) ms"
host_phase web1-up

# --- scenario 6: restarts under a bounded steady load -------------------------------------------
# The Master's daemon restarts (SIGTERM, as a rolling update does): the VIP goes to lb2 and
# comes back; no request may fail (a SYN lost in the handover is retransmitted).
load_start rb 25
lab_sleep 4
lab_stop balancer-lb1
start_node lb1 balancer-lb1b
wait_vip lb1 60
load_end rb restart_balancer 60

load_start rw 15
lab_sleep 3
lab_stop web-web1
start_node web1 web-web1b
load_end rw restart_web 60

load_start ro 15
lab_sleep 2
host_phase restart-operator
load_end ro restart_operator 60
say ""
say "== 4. restarts under a steady load (a request every 50 ms from the client) =="
say "   balancer daemon on lb1 (SIGTERM: the VIP goes to lb2 and comes back): $(load_line restart_balancer)"
say "   web daemon on web1:  $(load_line restart_web)"
say "   operator (SIGKILL):  $(load_line restart_operator)"

# --- scenario 7 (and 5 under it): the API server stops --------------------------------------------
host_phase apiserver-stop
lab_stop www2
wait_rule lb1 "$(rule "$LAB_WEB2_IP" 0)" 30
lab_web_start web2 www2
wait_rule lb1 "$(rule "$LAB_WEB2_IP" 1)" 30
lab_result apiserver_down_health "weight 0 then 1"
say ""
say "== 5. kube-apiserver stopped on the host: the data plane does not need it =="
say "   web2 stopped and started: weight 0 then 1 again, decided by lb1 alone"

load_start fo 20
lab_sleep 3
lab_neigh before-failover
ip -n lb1 link set eth0 down
pid="${LAB_BG_PIDS[balancer-lb1b]}"
kill -KILL "$pid" 2>/dev/null || true
lab_stop balancer-lb1b
wait_vip lb2 30
load_end fo failover 60
lab_neigh after-failover
lab_result failover_vip_mac "$(lab_vip_mac after-failover)"
lab_artifact witness-failover-lb2.txt lab_exec lb2 ipvsadm -Ln
say "   lb1 killed (SIGKILL, link down): lb2 took the VIP; client outage measured by one load"
say "   process: $(load_line failover)"
show "ip neigh show 192.0.2.100   (on the client: now lb2's MAC $(lab_mac lb2 eth0))" \
  lab_exec client ip neigh show "$LAB_VIP"
show "ipvsadm -L -n   (on lb2)" lab_exec lb2 ipvsadm -L -n
say ""
say "== 6. kube-apiserver started again: status catches up =="
host_phase apiserver-start

# --- scenario 5, the return: lb1 comes back and preempts ------------------------------------------
# lb1 died holding the VIP; the address had a kernel lifetime its dead daemon no longer renewed,
# so the kernel removed it (ADR 0002, "A VIP dies with its owner": at most lifetime + 1 s +
# lifetime/8 after the kill, 10 s at 1 s adverts; the load and the API server phase took longer).
# The new daemon starts as Backup, then preempts once it is ready to forward.
ip -n lb1 link set eth0 up
lab_result lb1_stale_vip "$(has_vip lb1 && echo yes || echo no)"
start_node lb1 balancer-lb1c
# The link came back without lb1's default route (the kernel drops routes through a link that
# goes down), so lb1 reaches no real server: it must stay at priority 1 and leave the VIP with
# lb2, which forwards. Then the route returns, as the host's network manager would restore it.
lab_sleep 10
if ! has_vip lb1 && has_vip lb2; then
  lab_result lb1_without_route "backup, VIP stays on lb2"
else
  lab_result lb1_without_route "lb1=$(has_vip lb1 && echo yes || echo no) lb2=$(has_vip lb2 && echo yes || echo no)"
fi
ip -n lb1 route replace default via "$LAB_ROUTER_FRONT_IP" dev eth0
t=$(lab_now_ms)
deadline=$((t + 60000))
while (($(lab_now_ms) < deadline)); do
  has_vip lb1 && ! has_vip lb2 && break
  lab_sleep 0.2
done
if has_vip lb1 && ! has_vip lb2; then
  lab_result lb1_back_vip lb1
  lab_result lb1_back_ms $(($(lab_now_ms) - t))
else
  lab_result lb1_back_vip "lb1=$(has_vip lb1 && echo yes || echo no) lb2=$(has_vip lb2 && echo yes || echo no)"
fi
say ""
say "== 7. lb1 back: the VIP its crash left expired on its own; without its route to the web nodes"
say "   it stands by at priority 1; once the route is back, it takes the VIP back (preempt) =="
say "   after $(($(lab_now_ms) - t)) ms"
host_phase lb1-back
lab_capture final lb1 lb2 web1 web2 client
lab_log "done"
