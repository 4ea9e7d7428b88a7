# shellcheck shell=bash
# Kubernetes nodes inside the lab guest: one containerd, kubelet and kube-proxy per node
# namespace, so a hostNetwork pod lands in that node's namespace. Source it after topology.sh.
#
# What a node is here (facts in shared/LAB-NOTES.md, "Real kubelets in the lab VM"):
#   - containerd 2.x (built from its Go module by tests/controlplane/build.sh) with Debian's runc,
#     its own root, state and socket under /run/lab-nodes/NODE (a tmpfs: the guest's root is the
#     host's, read-only), the overlayfs snapshotter;
#   - the pod network for pods without hostNetwork: Debian's CNI bridge `cni0` in the node
#     namespace, host-local addresses from 10.244.N.0/24;
#   - kubelet with the cgroupfs driver under its own cgroup /lab-NODE (every cgroup v2 controller
#     enabled there and at the root: kubelet refuses to start otherwise);
#   - kube-proxy, so the `kubernetes` Service's ClusterIP leads to the API server: iptables mode,
#     or IPVS mode on the nodes named in LAB_KUBE_PROXY_IPVS, with the exclusion lvstun's docs
#     ask for (`--ipvs-exclude-cidrs` with the VIPs' range, LAB_KUBE_PROXY_EXCLUDE): there it
#     shares the kernel's IPVS table with lvstun's balancer and deletes every virtual server it
#     does not own and is not told to leave alone;
#   - the API server at 203.0.113.100:$LAB_MGMT_GUEST_PORT inside the node namespace: that
#     address sits on the namespace's loopback and a relay there forwards to the management link
#     (the `kubernetes` EndpointSlice the host publishes points at it).
# Images: the archives `./dev images` writes (fully qualified names, the pause image included)
# are imported into each node's containerd before its kubelet starts: nothing is pulled.
#
# Processes start with `nsenter --net`, not `ip netns exec`: the latter gives every call a
# private mount namespace, which would hide kubelet's volume mounts from the runtime.
#
# Helpers:
#   lab_nodes_prepare               modules, cgroup controllers, the API address on each node
#   lab_nodes_up NODE:IP...         on each NODE: containerd, the images imported (all nodes at
#                                   once: the imports dominate the start-up under emulation),
#                                   then kubelet and kube-proxy; the Nth node's pods get the
#                                   subnet 10.244.N.0/24
#   lab_node_kube_proxy NODE [EXCLUDE]  (re)start NODE's kube-proxy; in IPVS mode with
#                                   --ipvs-exclude-cidrs EXCLUDE (default LAB_KUBE_PROXY_EXCLUDE;
#                                   `none` for no exclusion)
#   lab_node_stop NODE              stop its kubelet, kube-proxy and containerd
#   lab_nodes_save_logs LABEL       copy every node's container logs to $LAB_OUT/pod-logs/LABEL
#                                   (the kubelet deletes a pod's logs with the pod)
# Inputs from the host (run folder): $LAB_OUT/nodes/NODE.token, kube-proxy.token, ca.crt;
# env LAB_IMAGES (folder of *.oci.tar) and LAB_K8S_BIN (kubelet, kube-proxy, containerd, ...).

LAB_NODES_ROOT=/run/lab-nodes
LAB_API_ADDR=203.0.113.100
# Nodes whose kube-proxy runs in IPVS mode (space-separated), and what it must leave alone.
LAB_KUBE_PROXY_IPVS="${LAB_KUBE_PROXY_IPVS:-}"
LAB_KUBE_PROXY_EXCLUDE="${LAB_KUBE_PROXY_EXCLUDE:-192.0.2.0/24}"

: "${LAB_K8S_BIN:?nodes.sh needs LAB_K8S_BIN (the folder of kubelet, kube-proxy, containerd)}"
: "${LAB_IMAGES:?nodes.sh needs LAB_IMAGES (the folder of the image archives)}"

# lab_node_bg NS NAME CMD...: like lab_bg, in NS's network namespace only (shared mounts).
lab_node_bg() {
  local ns="$1" name="$2"
  shift 2
  [[ -z ${LAB_BG_PIDS[$name]:-} ]] || { lab_log "lab_node_bg: $name already running"; return 1; }
  nsenter --net="/run/netns/$ns" "$@" >"$LAB_OUT/logs/$name.log" 2>&1 </dev/null &
  # shellcheck disable=SC2004 # an associative array (declared in topology.sh)
  LAB_BG_PIDS[$name]=$!
  lab_log "started $name in $ns (pid $!)"
}

lab_nodes_prepare() {
  lab_modules overlay br_netfilter bridge veth ip_tables iptable_nat iptable_filter \
    xt_conntrack xt_MASQUERADE xt_comment xt_mark xt_addrtype xt_statistic nf_conntrack
  # kube-proxy's IPVS mode: the schedulers it checks for, and ipset with the set types it uses.
  [[ -z $LAB_KUBE_PROXY_IPVS ]] || lab_modules ip_vs ip_vs_rr ip_vs_wrr ip_vs_sh ip_set \
    ip_set_hash_ip ip_set_hash_ipport ip_set_hash_ipportip ip_set_hash_ipportnet \
    ip_set_hash_net ip_set_bitmap_port xt_set dummy
  # kubelet wants every controller the kernel offers delegated to its cgroup.
  local c ctl=""
  for c in $(</sys/fs/cgroup/cgroup.controllers); do ctl+=" +$c"; done
  echo "$ctl" >/sys/fs/cgroup/cgroup.subtree_control
  # A tmpfs of its own: kubelet's filesystem stats look the backing device up by mount, and the
  # guest's /run is also bind-mounted elsewhere (virtme-ng), which confuses that lookup.
  mkdir -p "$LAB_NODES_ROOT"
  mount -t tmpfs -o size=1536m,mode=0755 lab-nodes "$LAB_NODES_ROOT"
}

# The containerd configuration of NODE (version 3: containerd 2.x).
lab_node_containerd_config() {
  local node="$1" base="$LAB_NODES_ROOT/$1"
  cat <<EOF
version = 3
root = "$base/containerd/root"
state = "$base/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile", "io.containerd.nri.v1.nri", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$base/containerd.sock"

[ttrpc]
  address = "$base/containerd.sock.ttrpc"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "${LAB_PAUSE_IMAGE:?the pause image name}"

[plugins."io.containerd.cri.v1.runtime"]
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$base/cni/net.d"
EOF
}

lab_node_kubeconfig() { # USER TOKEN
  cat <<EOF
apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: https://$LAB_API_ADDR:$LAB_MGMT_GUEST_PORT
    certificate-authority: $LAB_OUT/nodes/ca.crt
users:
- name: $1
  user:
    token: $2
contexts:
- name: lab
  context: {cluster: lab, user: $1}
current-context: lab
EOF
}

# lab_node_runtime NODE INDEX: the API relay, cgroup, CNI and containerd of NODE.
lab_node_runtime() {
  local node="$1" index="$2" base="$LAB_NODES_ROOT/$1" c ctl=""
  mkdir -p "$base"/{containerd,kubelet,pod-logs,cni/net.d,cni/ipam,volume-plugins}
  # The API server's address on this namespace's loopback, relayed to the management link.
  ip -n "$node" addr add "$LAB_API_ADDR/32" dev lo
  lab_bg "$node" "api-$node" socat \
    "TCP-LISTEN:$LAB_MGMT_GUEST_PORT,bind=$LAB_API_ADDR,fork,reuseaddr" "UNIX-CONNECT:$LAB_MGMT_SOCK"
  # cgroup of the node's pods.
  mkdir -p "/sys/fs/cgroup/lab-$node"
  for c in $(</sys/fs/cgroup/lab-"$node"/cgroup.controllers); do ctl+=" +$c"; done
  echo "$ctl" >"/sys/fs/cgroup/lab-$node/cgroup.subtree_control"
  # The pods' network: a bridge in the node's namespace.
  cat >"$base/cni/net.d/10-lab.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "lab", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$base/cni/ipam",
            "ranges": [[{"subnet": "10.244.$index.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}
]}
EOF
  lab_node_containerd_config "$node" >"$base/containerd.toml"
  lab_node_bg "$node" "containerd-$node" env PATH="$LAB_K8S_BIN:$PATH" \
    "$LAB_K8S_BIN/containerd" --config "$base/containerd.toml" --log-level warn
}

# lab_node_images NODE: wait for NODE's containerd, import every image archive.
lab_node_images() {
  local node="$1" base="$LAB_NODES_ROOT/$1" i img
  for ((i = 0; i < 600; i++)); do
    [[ -S $base/containerd.sock ]] && break
    lab_sleep 0.1
  done
  [[ -S $base/containerd.sock ]] || { lab_log "containerd on $node did not start"; return 1; }
  for img in "$LAB_IMAGES"/*.oci.tar; do
    "$LAB_K8S_BIN/ctr" --address "$base/containerd.sock" -n k8s.io images import \
      --snapshotter overlayfs "$img" >>"$LAB_OUT/logs/import-$node.log" 2>&1 ||
      { lab_log "importing $img on $node failed"; return 1; }
  done
  "$LAB_K8S_BIN/ctr" --address "$base/containerd.sock" -n k8s.io images ls -q \
    >"$LAB_OUT/images-$node.txt"
}

# lab_node_kubelet NODE IP: kubelet and kube-proxy of NODE.
lab_node_kubelet() {
  local node="$1" ip="$2" base="$LAB_NODES_ROOT/$1"
  lab_node_kubeconfig "system:node:$node" "$(<"$LAB_OUT/nodes/$node.token")" >"$base/kubelet.kubeconfig"
  lab_node_kubeconfig system:kube-proxy "$(<"$LAB_OUT/nodes/kube-proxy.token")" >"$base/kube-proxy.kubeconfig"
  cat >"$base/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: /lab-$node
containerRuntimeEndpoint: unix://$base/containerd.sock
failSwapOn: false
address: $ip
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
podLogsDir: $base/pod-logs
resolvConf: ""
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%"}
localStorageCapacityIsolation: false
serializeImagePulls: false
registerNode: true
EOF
  lab_node_bg "$node" "kubelet-$node" "$LAB_K8S_BIN/kubelet" --config "$base/kubelet.yaml" \
    --kubeconfig "$base/kubelet.kubeconfig" --root-dir "$base/kubelet" \
    --volume-plugin-dir "$base/volume-plugins" --hostname-override "$node" --node-ip "$ip" --v=1
  lab_node_kube_proxy "$node"
}

lab_node_kube_proxy() {
  local node="$1" exclude="${2:-$LAB_KUBE_PROXY_EXCLUDE}" base="$LAB_NODES_ROOT/$1" mode=()
  local log="$LAB_OUT/logs/kube-proxy-$1.log"
  if [[ " $LAB_KUBE_PROXY_IPVS " == *" $node "* ]]; then
    # A short sync period: more of kube-proxy's clean-ups within a run.
    mode=(--proxy-mode ipvs --ipvs-sync-period 10s)
    [[ $exclude == none ]] || mode+=(--ipvs-exclude-cidrs "$exclude")
  else
    mode=(--proxy-mode iptables)
  fi
  lab_stop "kube-proxy-$node"
  [[ ! -e $log ]] || cat "$log" >>"$log.earlier"
  lab_node_bg "$node" "kube-proxy-$node" "$LAB_K8S_BIN/kube-proxy" \
    --kubeconfig "$base/kube-proxy.kubeconfig" --hostname-override "$node" "${mode[@]}" \
    --cluster-cidr 10.244.0.0/16 --conntrack-max-per-core 0 \
    --healthz-bind-address 127.0.0.1:10256 --metrics-bind-address 127.0.0.1:10249 --v=1
}

lab_nodes_up() {
  local spec index=0 pids=() pid
  for spec in "$@"; do
    index=$((index + 1))
    lab_node_runtime "${spec%%:*}" "$index"
  done
  for spec in "$@"; do
    lab_node_images "${spec%%:*}" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do
    wait "$pid" || { lab_log "a node's images could not be imported"; return 1; }
  done
  lab_log "images imported on every node"
  for spec in "$@"; do
    lab_node_kubelet "${spec%%:*}" "${spec#*:}"
    # kubelet binds its device-plugin socket at a fixed path (/var/lib/kubelet/device-plugins,
    # not under --root-dir), the same for every node of this guest: two kubelets starting at
    # once race for it and the loser exits ("Failed to start ContainerManager ... address
    # already in use"). The next one starts once this one has registered its Node.
    lab_wait_log "kubelet-${spec%%:*}" '*Successfully registered node*' 120 ||
      lab_log "kubelet on ${spec%%:*} has not registered its Node"
  done
}

lab_node_stop() {
  local node="$1"
  lab_stop "kube-proxy-$node"
  lab_stop "kubelet-$node"
  lab_stop "containerd-$node"
}

lab_nodes_save_logs() {
  local node dir
  for dir in "$LAB_NODES_ROOT"/*/pod-logs; do
    [[ -d $dir ]] || continue
    node="${dir%/pod-logs}"
    node="${node##*/}"
    mkdir -p "$LAB_OUT/pod-logs/$1/$node"
    cp -a "$dir/." "$LAB_OUT/pod-logs/$1/$node/" 2>/dev/null || true
  done
  lab_log "container logs saved in pod-logs/$1"
}
