#!/usr/bin/env bash
# The web role in a cluster, on a real kernel: `lvstun-node web` runs in the web1 namespace
# with exactly the DaemonSet's arguments (--node-name=... --health-port=... --log-format=json),
# no --config and no --dry-run, and reaches the host's kube-apiserver through the management
# link (lab_mgmt_expose: 127.0.0.1:$LAB_MGMT_GUEST_PORT in web1 -> guestfwd -> the host's
# loopback port of the API server). It finds its RealServer by spec.nodeName, prepares the
# namespace (tunl0, the VIP on lvstun0, sysctls, nft) and reports TunnelReady; the host test
# (tests/tests/lab_web_cluster.rs) reads the condition back from the API server afterwards.
#
# Environment (from the host test): LAB_K8S_TOKEN (the chart's web ServiceAccount token),
# LAB_K8S_NODE (the node name the RealServer names).
# Artifacts: web1-addr.txt (ip addr in web1), web1-nft.txt (lvstun's tables), web1-readyz.txt,
#   logs/web1-cluster.log (the daemon's log).
# results.txt: tunnel_ready_written=yes|no, vip_on_lvstun0=yes|no.
set -euo pipefail
# shellcheck source=tests/lab/topology.sh
. "$LAB_DIR/topology.sh"

: "${LAB_K8S_TOKEN:?the host test passes the web ServiceAccount token}"
: "${LAB_K8S_NODE:?the host test passes the node name}"
node="$LAB_BIN/lvstun-node"
[[ -x $node ]] || { lab_log "no $node: build it (cargo build --release -p lvstun-node)"; exit 1; }

lab_topology_up
lab_mgmt_up
lab_mgmt_expose web1

# A kubeconfig as the web ServiceAccount. The API server's certificate is the harness's
# self-signed one (its kubeconfigs skip verification too); the link itself is the guestfwd.
kubeconfig="$LAB_OUT/web1-kubeconfig.yaml"
cat >"$kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster: {server: "https://127.0.0.1:$LAB_MGMT_GUEST_PORT", insecure-skip-tls-verify: true}
users:
- name: web
  user: {token: "$LAB_K8S_TOKEN"}
contexts:
- name: lab
  context: {cluster: lab, user: web}
current-context: lab
EOF
lab_wait_tcp web1 127.0.0.1 "$LAB_MGMT_GUEST_PORT" 30

lab_bg web1 web1-cluster env KUBECONFIG="$kubeconfig" "$node" web \
  "--node-name=$LAB_K8S_NODE" --health-port=9782 --log-format=json \
  "--state-dir=$LAB_OUT/state-web1"
if lab_wait_log web1-cluster '*"TunnelReady written"*"status":"True"*' 240; then
  lab_result tunnel_ready_written yes
else
  lab_result tunnel_ready_written no
fi
lab_artifact web1-addr.txt lab_exec web1 ip addr show
lab_artifact web1-nft.txt lab_exec web1 nft list ruleset || true
lab_artifact web1-readyz.txt lab_exec web1 curl -sS --max-time 20 http://127.0.0.1:9782/readyz || true
if lab_exec web1 ip -br addr show dev lvstun0 | grep -q "$LAB_VIP/32"; then
  lab_result vip_on_lvstun0 yes
else
  lab_result vip_on_lvstun0 no
fi
lab_stop web1-cluster
lab_log "done"
