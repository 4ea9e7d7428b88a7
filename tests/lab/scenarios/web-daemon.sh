#!/usr/bin/env bash
# The web role (`lvstun-node web --config`) prepares both real servers; nothing is done by hand
# on web1 or web2 (no ip, no sysctl, no modprobe ipip: the daemon makes the kernel load it).
# lb1 is programmed with ipvsadm as in recipe-ipvsadm.sh (the stand-in for the balancer role).
#
#   0. web2 starts with default.rp_filter=1 (as RHEL-like hosts ship), so the tunl0 the kernel
#      makes later is born strict; the daemon must turn it off (tunl0 has no address: the VIP
#      is on lvstun0, and the kernel drops on an address-less device for any rp_filter but 0).
#      Both web nodes are snapshotted (ip -d link, ip addr, sysctls, nft ruleset) before anything runs.
#      lb1 drops the ICMP "fragmentation needed" it would send to clients (a network that
#      filters ICMP), so only the MSS clamp can make large uploads fit the tunnel.
#   1. Daemons with --mss off: a 1 MB POST through the VIP must fail (the control).
#   2. Daemons stopped (SIGTERM keeps the host configured) and restarted with the default MSS
#      clamp: requests reach both web servers; a 1 MB POST succeeds; ARP for the VIP on the web
#      segments gets no answer while lb1 answers on the front; /readyz and `web check` say
#      ready; a second `web apply` writes nothing.
#   3. web1's RealServer leaves the config (the running daemon undoes everything), web2 is
#      undone by `web cleanup`; both are snapshotted again.
#
# Artifacts (raw output; tests/tests/lab_web_daemon.rs parses them):
#   snap-{before,after}-web{1,2}.txt  the snapshots
#   client-get.txt                    curl -i of REQUESTS GETs through the VIP
#   post-noclamp.txt, post-clamp.txt  the 1 MB POSTs (body = byte count the server read)
#   arping-{client,web1,web2}.txt     arping for the VIP: on the front, on each web segment
#   web1-nft.txt                      lvstun's nft tables on web1 with their counters
#   web1-readyz.txt, web1-check.txt   the health endpoint and `web check`
#   web{1,2}-apply2.txt               the second apply (`writes: 0`)
#   web{1,2}-kept.txt                 the VIP device after SIGTERM (still configured)
#   web1-removed.txt, web2-cleanup.txt  the undo
#   logs/web*-daemon*.log             the daemons' logs
# results.txt: *_rc exit codes and timings (t_*).
set -euo pipefail
# shellcheck source=tests/lab/topology.sh
. "$LAB_DIR/topology.sh"

requests="${REQUESTS:-6}"
node="$LAB_BIN/lvstun-node"
[[ -x $node ]] || { lab_log "no $node: build it (cargo build --release -p lvstun-node)"; exit 1; }
cfg="$LAB_OUT/web.yaml"
upload="$LAB_OUT/upload.bin"

uptime_s() { local up _; read -r up _ </proc/uptime; printf '%s' "$up"; }

snapshot() { # LABEL NS...
  local label="$1" ns
  shift
  for ns in "$@"; do
    # shellcheck disable=SC2016 # expanded by the inner shell
    ip netns exec "$ns" bash -c '
      echo "### ip -d link"; ip -d link show
      echo "### ip addr"; ip addr show
      echo "### sysctl"
      for f in /proc/sys/net/ipv4/conf/*/rp_filter /proc/sys/net/ipv4/conf/*/arp_ignore \
               /proc/sys/net/ipv4/conf/*/arp_announce; do
        echo "${f#/proc/sys/} = $(<"$f")"
      done
      echo "### nft list ruleset"; nft list ruleset' >"$LAB_OUT/snap-$label-$ns.txt" 2>&1
  done
}

write_config() { # WITH_WEB1(0|1): written beside and renamed, so the daemons never read half a file
  {
    cat <<EOF
apiVersion: lvstun.io/v1alpha1
kind: VirtualService
metadata: {name: www}
spec:
  vip: $LAB_VIP
  ports: [{port: 80, protocol: TCP}]
  scheduler: rr
  realServerSelector: {matchLabels: {app: www}}
  balancers: {nodeSelector: {matchLabels: {lvstun.io/balancer: "true"}}, virtualRouterID: 51}
EOF
    if [[ $1 == 1 ]]; then
      cat <<EOF
---
apiVersion: lvstun.io/v1alpha1
kind: RealServer
metadata: {name: web1, labels: {app: www}}
spec: {address: $LAB_WEB1_IP}
EOF
    fi
    cat <<EOF
---
apiVersion: lvstun.io/v1alpha1
kind: RealServer
metadata: {name: web2, labels: {app: www}}
spec: {address: $LAB_WEB2_IP}
EOF
  } >"$cfg.new"
  mv "$cfg.new" "$cfg"
}

start_daemons() { # SUFFIX EXTRA_ARGS...
  local suffix="$1" n
  shift
  for n in 1 2; do
    lab_bg "web$n" "web$n-daemon$suffix" "$node" web --config "$cfg" --real-server "web$n" \
      --state-dir "$LAB_OUT/state-web$n" --health-port 9100 "$@"
  done
  for n in 1 2; do
    lab_wait_log "web$n-daemon$suffix" "*reconciled: writes=* ready=true*" 120
  done
}

post() { # ARTIFACT: one 1 MB POST through the VIP; records ARTIFACT's rc
  local name="$1" rc=0
  lab_exec client curl -sS -i --max-time "${2:-20}" --connect-timeout 5 \
    -H 'Content-Type: application/octet-stream' --data-binary "@$upload" \
    -w 'curl: code=%{http_code} size_upload=%{size_upload}\n' "http://$LAB_VIP/upload" \
    >"$LAB_OUT/$name.txt" 2>&1 || rc=$?
  lab_result "${name//-/_}_rc" "$rc"
  lab_log "$name: curl exit $rc"
}

# --- 0. the lab, and the web nodes as they were -------------------------------------------
lab_modules ip_vs ip_vs_rr # not ipip: the web daemon makes the kernel load it
lab_topology_up
lab_sysctl web2 net.ipv4.conf.default.rp_filter=1
snapshot before web1 web2
lab_result ipip_loaded_before "$([[ -d /sys/module/ipip ]] && echo yes || echo no)"

write_config 1
head -c 1048576 /dev/zero >"$upload"
lab_web_start web1 www1
lab_web_start web2 www2
lab_ipvs_by_hand lb1
lab_exec lb1 nft -f - <<'EOF'
table ip lab_icmp_filter {
  chain output {
    type filter hook output priority filter; policy accept;
    icmp type destination-unreachable icmp code frag-needed counter drop
  }
}
EOF

# --- 1. no MSS clamp: the control ----------------------------------------------------------
t0="$(uptime_s)"
start_daemons "" --mss off
lab_result t_first_ready "$t0 $(uptime_s)"
post post-noclamp 10
lab_stop web1-daemon
lab_stop web2-daemon
lab_artifact web1-kept.txt ip -n web1 -br addr show dev lvstun0
lab_artifact web2-kept.txt ip -n web2 -br addr show dev lvstun0

# --- 2. the default: MSS clamped ------------------------------------------------------------
t0="$(uptime_s)"
start_daemons "-b"
lab_result t_restart_ready "$t0 $(uptime_s)"
urls=()
for ((i = 0; i < requests; i++)); do urls+=("http://$LAB_VIP/"); done
lab_artifact client-get.txt lab_exec client curl -sS -i --max-time 10 --connect-timeout 5 \
  -H 'Connection: close' -w 'curl: code=%{http_code} local_port=%{local_port}\n' "${urls[@]}"
lab_result requests "$requests"
post post-clamp 30

rc=0
lab_exec client arping -c 2 -w 4 -I eth0 "$LAB_VIP" >"$LAB_OUT/arping-client.txt" 2>&1 || rc=$?
lab_result arping_client_rc "$rc"
rc=0
lab_exec router arping -c 3 -w 4 -I eth1 "$LAB_VIP" >"$LAB_OUT/arping-web1.txt" 2>&1 || rc=$?
lab_result arping_web1_rc "$rc"
rc=0
lab_exec router arping -c 3 -w 4 -I eth2 "$LAB_VIP" >"$LAB_OUT/arping-web2.txt" 2>&1 || rc=$?
lab_result arping_web2_rc "$rc"
lab_artifact lb1-link.json ip -n lb1 -j link show dev eth0

lab_artifact web1-nft.txt ip netns exec web1 nft list ruleset
rc=0
lab_exec web1 curl -sS --max-time 5 -w 'curl: code=%{http_code}\n' http://127.0.0.1:9100/readyz \
  http://127.0.0.1:9100/healthz >"$LAB_OUT/web1-readyz.txt" 2>&1 || rc=$?
lab_result readyz_rc "$rc"
rc=0
lab_exec web1 "$node" web check --config "$cfg" --real-server web1 \
  --state-dir "$LAB_OUT/state-web1" >"$LAB_OUT/web1-check.txt" 2>&1 || rc=$?
lab_result check_rc "$rc"
for n in 1 2; do
  rc=0
  t0="$(uptime_s)"
  lab_exec "web$n" "$node" web apply --config "$cfg" --real-server "web$n" \
    --state-dir "$LAB_OUT/state-web$n" >"$LAB_OUT/web$n-apply2.txt" 2>&1 || rc=$?
  lab_result "apply2_web${n}_rc" "$rc"
  lab_result "t_apply2_web$n" "$t0 $(uptime_s)"
done
lab_capture during web1 web2 lb1

# --- 3. undo --------------------------------------------------------------------------------
t0="$(uptime_s)"
write_config 0
lab_wait_log web1-daemon-b "*reconciled: writes=* vips=0 (*" 60
lab_result t_removed "$t0 $(uptime_s)"
grep -E 'applied:|reconciled:' "$LAB_OUT/logs/web1-daemon-b.log" | tail -n 20 >"$LAB_OUT/web1-removed.txt" || true
lab_stop web1-daemon-b
lab_stop web2-daemon-b
lab_artifact web2-kept-b.txt ip -n web2 -br addr show dev lvstun0
rc=0
lab_exec web2 "$node" web cleanup --state-dir "$LAB_OUT/state-web2" >"$LAB_OUT/web2-cleanup.txt" 2>&1 || rc=$?
lab_result cleanup_web2_rc "$rc"
snapshot after web1 web2
for n in 1 2; do
  lab_result "state_file_web$n" "$([[ -e $LAB_OUT/state-web$n/web-state.json ]] && echo present || echo absent)"
done
rm -f "$upload"
lab_log "done"
