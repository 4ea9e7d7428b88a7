# shellcheck shell=bash
# The classic LVS-TUN recipe's network, built from network namespaces inside the lab guest, and
# the helpers scenario scripts use. Source it from a scenario (which runs inside the guest, see
# run-guest.sh); it needs the LAB_* variables guest-entry.sh exports.
#
#                 front segment 192.0.2.0/24 (bridge front0 in the guest's root namespace)
#   client .10 ----+---- lb1 .11 ---- lb2 .12 ---- router .1     VIP 192.0.2.100
#                                                    |  (forwards; rp_filter 0)
#                          198.51.100.0/25 ----------+---------- 198.51.100.128/25
#                          router .1, web1 .10                  router .129, web2 .130
#
# Only documentation ranges are used, all inside this guest. Every namespace's interface is
# eth0 (the router has eth0 front, eth1 to web1, eth2 to web2); MACs are fixed and readable:
# 02:00:00:02:00:<host byte> on the front, 02:00:00:64:00:<host byte> behind the router.
#
# Why so few processes: under TCG every exec of a host binary costs a noticeable fraction of a
# second (the binary and its libraries are read over 9p), so the helpers batch `ip` commands
# (ip -n NS -batch) and use bash builtins for sleeping, reading files and arithmetic.
#
# Helpers (all bounded in time):
#   lab_log MSG...                 timestamped line (guest uptime) on stderr (guest.log)
#   lab_sleep SECS                 sleep without forking (fractions allowed)
#   lab_result KEY VALUE           append KEY=VALUE to $LAB_OUT/results.txt (repeatable keys)
#   lab_artifact NAME CMD...       run CMD, its stdout saved as $LAB_OUT/NAME (stderr to log)
#   lab_modules MOD...             modprobe -a MOD... (once per module per run)
#   lab_topology_up                build the namespaces, bridge, veths, addresses and routes
#   lab_exec NS CMD...             run CMD in namespace NS
#   lab_sysctl NS KEY=VALUE...     set sysctls inside NS (one process pair for all)
#   lab_bg NS NAME CMD...          start CMD in NS in the background, output in
#                                  $LAB_OUT/logs/NAME.log; stopped by lab_cleanup
#   lab_stop NAME                  stop one background process started by lab_bg
#   lab_wait_log NAME PATTERN SECS wait until $LAB_OUT/logs/NAME.log has a line matching the
#                                  glob PATTERN (fails after SECS)
#   lab_wait_tcp NS ADDR PORT SECS wait until a TCP connect from NS to ADDR:PORT succeeds
#   lab_now_ms                     wall clock in ms since the epoch (no fork)
#   lab_count_lines NAME GLOB      how many lines of $LAB_OUT/logs/NAME.log match GLOB (0 when
#                                  there is no such log yet)
#   lab_wait_count NAME GLOB N SECS  wait until N lines of logs/NAME.log match GLOB
#   lab_wait_until SECS STEP WHAT CMD...  run CMD every STEP s until it succeeds; after SECS
#                                  log that WHAT never came and fail
#   lab_neigh PHASE                the client's neighbour entry for the VIP as neigh-PHASE.json
#   lab_vip_mac PHASE              the MAC in neigh-PHASE.json (`none` without one)
#   lab_web_prepare NS...          a web node prepared by hand as the classic recipe does it:
#                                  the VIP on tunl0, rp_filter off, no ARP for the VIP
#   lab_web_start NS NAME [LISTEN] start the lvstun-lab-web fixture (default 0.0.0.0:80) and
#                                  wait until it listens
#   lab_mac NS IFACE               print the interface's MAC
#   lab_upload_start NAME RATE FILE [CURL-ARG...]  a rate-limited POST of FILE to the VIP from
#                                  the client in the background (logs/upload-NAME.log)
#   lab_upload_result NAME         sets LAB_UPLOAD_RESULT to "<curl exit> <http code> <bytes the
#                                  server counted>" once the upload ended (bounded)
#   lab_vip_watch_start TAG NS...  witnesses of who holds the VIP, with no polling: `ip -ts
#                                  monitor address` on each NS's eth0 (logs/vipwatch-TAG-NS.log,
#                                  after a first line `initial <addresses>`) and `ip -ts monitor
#                                  neigh` on the client (logs/vipwatch-TAG-client.log)
#   lab_vip_watch_stop TAG NS...   stop them
#   lab_node_snapshot NS FILE      what lvstun may change on a node, in a form that compares
#                                  exactly (addresses and links but the CNI's, routes, IPVS
#                                  services and sync daemons, nft tables but iptables-nft's,
#                                  the conf and IPVS sysctls)
#   lab_capture LABEL [NS...]      save addresses, routes, neighbours, links, IPVS, nft ruleset
#                                  and key sysctls per namespace under $LAB_OUT/capture/LABEL/
#   lab_mgmt_up                    bring up the management link (needs run-guest.sh
#                                  --mgmt-port): guest eth0 203.0.113.15/24, plus a unix socket
#                                  $LAB_MGMT_SOCK relaying to the host through the guestfwd
#   lab_mgmt_expose NS [PORT]      in NS, listen on 127.0.0.1:PORT (default
#                                  $LAB_MGMT_GUEST_PORT) and relay to the host: namespaces get
#                                  the host's service without any route or interface added
#   lab_recipe_up                  the network, with web1 and web2 prepared by hand and serving
#   lab_need_bins BIN...           exit 2 (setup error) unless each BIN is executable
#   lab_has_vip NS                 the VIP is on NS's eth0
#   lab_wait_router_ready NAME     poll (60 s) until logs/NAME.log says the balancer's VRRP
#                                  router runs at its configured priority (it forwards)
#   lab_vrrp_pair_config FILE MS   the examples as a standalone balancer file for lb1 (priority
#                                  200) and lb2 (100), adverts every MS ms
#   lab_has_rule NS PREFIX         some line of NS's `ipvsadm -Sn` starts with PREFIX
#   lab_wait_rule NS PREFIX SECS   poll until it does
#   lab_log_line NAME GLOB         print the first line of logs/NAME.log matching GLOB
#   lab_synced NS FIRST LAST       NS's IPVS connection table holds an ESTABLISHED connection
#                                  to VIP:80 from a client port in FIRST..LAST (a synced copy)
#   lab_wait_synced NS FIRST LAST SECS  poll until it does; prints the ms waited or `timeout`
#   lab_ipvs_conns_wait NS N ARTIFACT   save NS's `ipvsadm -Ln --stats --exact` as ARTIFACT
#                                  until the VIP:80 service counts N connections (bounded)
#   lab_ipvs_by_hand NS            the recipe's balancer by hand (VIP on eth0, ipvsadm -R)
#   lab_dummy_d0 NS...             lo up and a dummy d0 with 198.51.100.254/24 in each NS
#   lab_cleanup                    stop background processes; on failure capture everything
#                                  (installed as the EXIT trap when this file is sourced)

# --- addresses of the recipe (documentation ranges only) --------------------------------------
LAB_VIP=192.0.2.100
LAB_CLIENT_IP=192.0.2.10
LAB_LB1_IP=192.0.2.11
LAB_LB2_IP=192.0.2.12
LAB_ROUTER_FRONT_IP=192.0.2.1
LAB_WEB1_IP=198.51.100.10
LAB_WEB2_IP=198.51.100.130
LAB_ROUTER_WEB1_IP=198.51.100.1
LAB_ROUTER_WEB2_IP=198.51.100.129
LAB_NAMESPACES=(client lb1 lb2 router web1 web2)
LAB_MGMT_SOCK=/run/lvstun-lab-mgmt.sock
# The Services' ClusterIPs (the host's kube-apiserver --service-cluster-ip-range 10.96.0.0/24).
LAB_SERVICE_CIDR_PREFIX=10.96.0.
export LAB_VIP LAB_CLIENT_IP LAB_LB1_IP LAB_LB2_IP LAB_ROUTER_FRONT_IP LAB_WEB1_IP LAB_WEB2_IP \
  LAB_ROUTER_WEB1_IP LAB_ROUTER_WEB2_IP LAB_MGMT_SOCK

: "${LAB_OUT:?topology.sh runs inside the lab guest (LAB_OUT unset)}"
mkdir -p "$LAB_OUT/logs"
declare -gA LAB_BG_PIDS=()

# A file descriptor nobody ever writes to: `read -t` on it is a sleep without a fork.
exec {LAB_SLEEP_FD}<> <(:)

lab_log() {
  local up _
  read -r up _ </proc/uptime
  printf '[%8s] %s\n' "$up" "$*" >&2
}

lab_sleep() {
  read -r -t "$1" -u "$LAB_SLEEP_FD" _ || true
}

lab_result() {
  local key="$1" value="${2//$'\n'/ }"
  printf '%s=%s\n' "$key" "$value" >>"$LAB_OUT/results.txt"
}

lab_artifact() {
  local name="$1"
  shift
  local path="$LAB_OUT/$name"
  [[ -d ${path%/*} ]] || mkdir -p "${path%/*}"
  "$@" >"$path"
}

declare -gA LAB_MODULES_LOADED=()
lab_modules() {
  local want=() m
  for m in "$@"; do
    [[ -n ${LAB_MODULES_LOADED[$m]:-} ]] || want+=("$m")
  done
  ((${#want[@]})) || return 0
  lab_log "modprobe ${want[*]}"
  modprobe -a "${want[@]}"
  for m in "${want[@]}"; do LAB_MODULES_LOADED[$m]=1; done
}

lab_exec() {
  local ns="$1"
  shift
  ip netns exec "$ns" "$@"
}

lab_sysctl() {
  local ns="$1"
  shift
  ip netns exec "$ns" sysctl -q -w "$@" >/dev/null
}

lab_topology_up() {
  lab_log "building the recipe topology"
  lab_modules veth bridge
  local ns batch=""
  for ns in "${LAB_NAMESPACES[@]}"; do
    batch+="netns add $ns"$'\n'
  done
  # Namespaces and links are made from the root namespace in one batch (one process).
  ip -batch - <<EOF
${batch}link add front0 type bridge
link set front0 up
link add fr-client type veth peer name eth0 netns client address 02:00:00:02:00:0a
link add fr-lb1 type veth peer name eth0 netns lb1 address 02:00:00:02:00:0b
link add fr-lb2 type veth peer name eth0 netns lb2 address 02:00:00:02:00:0c
link add fr-router type veth peer name eth0 netns router address 02:00:00:02:00:01
link set fr-client master front0 up
link set fr-lb1 master front0 up
link set fr-lb2 master front0 up
link set fr-router master front0 up
link add eth1 netns router address 02:00:00:64:00:01 type veth peer name eth0 netns web1 address 02:00:00:64:00:0a
link add eth2 netns router address 02:00:00:64:00:81 type veth peer name eth0 netns web2 address 02:00:00:64:00:82
EOF
  ip -n client -batch - <<EOF
link set lo up
addr add $LAB_CLIENT_IP/24 dev eth0
link set eth0 up
route add default via $LAB_ROUTER_FRONT_IP
EOF
  ip -n lb1 -batch - <<EOF
link set lo up
addr add $LAB_LB1_IP/24 dev eth0
link set eth0 up
route add default via $LAB_ROUTER_FRONT_IP
EOF
  ip -n lb2 -batch - <<EOF
link set lo up
addr add $LAB_LB2_IP/24 dev eth0
link set eth0 up
route add default via $LAB_ROUTER_FRONT_IP
EOF
  ip -n router -batch - <<EOF
link set lo up
addr add $LAB_ROUTER_FRONT_IP/24 dev eth0
addr add $LAB_ROUTER_WEB1_IP/25 dev eth1
addr add $LAB_ROUTER_WEB2_IP/25 dev eth2
link set eth0 up
link set eth1 up
link set eth2 up
EOF
  ip -n web1 -batch - <<EOF
link set lo up
addr add $LAB_WEB1_IP/25 dev eth0
link set eth0 up
route add default via $LAB_ROUTER_WEB1_IP
EOF
  ip -n web2 -batch - <<EOF
link set lo up
addr add $LAB_WEB2_IP/25 dev eth0
link set eth0 up
route add default via $LAB_ROUTER_WEB2_IP
EOF
  # The router forwards between the data centers. Replies of direct server return leave the web
  # nodes with the VIP (a front address) as source, arriving on eth1/eth2: reverse-path
  # filtering on the router would drop them, as it would on a real border router configured
  # strictly, so it is off here (the recipe's environment, not the recipe itself).
  lab_sysctl router net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
    net.ipv4.conf.default.rp_filter=0 net.ipv4.conf.eth0.rp_filter=0 \
    net.ipv4.conf.eth1.rp_filter=0 net.ipv4.conf.eth2.rp_filter=0
  lab_log "topology up"
}

lab_bg() {
  local ns="$1" name="$2"
  shift 2
  [[ -z ${LAB_BG_PIDS[$name]:-} ]] || { lab_log "lab_bg: $name already running"; return 1; }
  ip netns exec "$ns" "$@" >"$LAB_OUT/logs/$name.log" 2>&1 </dev/null &
  LAB_BG_PIDS[$name]=$!
  lab_log "started $name in $ns (pid $!): $*"
}

lab_stop() {
  local name="$1" pid="${LAB_BG_PIDS[$1]:-}" i
  [[ -n $pid ]] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    lab_sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "LAB_BG_PIDS[$name]"
  lab_log "stopped $name"
}

lab_wait_log() {
  local name="$1" pattern="$2" secs="$3" file="$LAB_OUT/logs/$1.log" line i
  local rounds=$((secs * 10))
  for ((i = 0; i < rounds; i++)); do
    if [[ -f $file ]]; then
      while IFS= read -r line; do
        # shellcheck disable=SC2053 # PATTERN is a glob on purpose
        [[ $line == $pattern ]] && return 0
      done <"$file"
    fi
    local pid="${LAB_BG_PIDS[$name]:-}"
    if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
      lab_log "$name exited before logging '$pattern'"
      return 1
    fi
    lab_sleep 0.1
  done
  lab_log "timed out after ${secs}s waiting for '$pattern' in $file"
  return 1
}

lab_wait_tcp() {
  local ns="$1" addr="$2" port="$3" secs="$4" i
  local rounds=$((secs * 5))
  for ((i = 0; i < rounds; i++)); do
    ip netns exec "$ns" bash -c "exec 3<>/dev/tcp/$addr/$port" 2>/dev/null && return 0
    lab_sleep 0.2
  done
  lab_log "timed out after ${secs}s waiting for $addr:$port to accept in $ns"
  return 1
}

lab_now_ms() {
  local t=${EPOCHREALTIME/./}
  printf '%s' $((t / 1000))
}

lab_count_lines() {
  local l n=0 file="$LAB_OUT/logs/$1.log"
  [[ -f $file ]] || { printf '0'; return; }
  while IFS= read -r l; do
    # shellcheck disable=SC2053 # a glob on purpose
    [[ $l == $2 ]] && n=$((n + 1))
  done <"$file"
  printf '%s' "$n"
}

lab_wait_until() {
  local secs="$1" step="$2" what="$3" deadline
  shift 3
  deadline=$(($(lab_now_ms) + secs * 1000))
  while (($(lab_now_ms) < deadline)); do
    "$@" && return 0
    lab_sleep "$step"
  done
  lab_log "timed out after $secs s waiting for $what"
  return 1
}

lab_wait_count() {
  local deadline=$(($(lab_now_ms) + $4 * 1000))
  while (($(lab_now_ms) < deadline)); do
    (($(lab_count_lines "$1" "$2") >= $3)) && return 0
    lab_sleep 0.05
  done
  lab_log "timed out after $4 s waiting for $3 lines '$2' in $1"
  return 1
}

lab_neigh() {
  lab_artifact "neigh-$1.json" ip -n client -j neigh show "$LAB_VIP"
}

lab_vip_mac() {
  local json
  json="$(<"$LAB_OUT/neigh-$1.json")"
  if [[ $json =~ \"lladdr\":\"([0-9a-f:]+)\" ]]; then
    printf '%s' "${BASH_REMATCH[1]}"
  else
    printf none
  fi
}

lab_web_prepare() {
  local ns
  for ns in "$@"; do
    ip -n "$ns" -batch - <<EOF
addr add $LAB_VIP/32 dev tunl0
link set tunl0 up
EOF
    # tunl0 receives the client's packets (source 192.0.2.10) although the route back to the
    # client leaves by eth0: reverse-path filtering must be off there and in "all" (the kernel
    # applies the maximum of the two). The VIP must never be announced nor answered for by ARP.
    lab_sysctl "$ns" net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
      net.ipv4.conf.tunl0.rp_filter=0 net.ipv4.conf.eth0.rp_filter=0 \
      net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
      net.ipv4.conf.eth0.arp_ignore=1 net.ipv4.conf.eth0.arp_announce=2
  done
}

lab_web_start() {
  local ns="$1" name="$2" listen="${3:-0.0.0.0:80}"
  local bin="$LAB_BIN/lvstun-lab-web"
  [[ -x $bin ]] || { lab_log "no $bin: build it first (cargo build --release -p lvstun-tests --bin lvstun-lab-web)"; return 1; }
  lab_bg "$ns" "$name" "$bin" --listen "$listen" --name "$name"
  lab_wait_log "$name" "listening on *" 60
  lab_log "$name listening on $listen in $ns"
}

lab_mac() {
  local line
  line="$(ip -n "$1" -br link show dev "$2")"
  # "eth0@if3   UP   02:00:00:02:00:0b <BROADCAST,...>"
  read -r _ _ mac _ <<<"$line"
  printf '%s\n' "$mac"
}

lab_capture() {
  local label="$1" ns
  shift
  local nss=("$@")
  ((${#nss[@]})) || nss=("${LAB_NAMESPACES[@]}")
  local dir="$LAB_OUT/capture/$label"
  mkdir -p "$dir"
  lab_log "capture $label: ${nss[*]}"
  for ns in "${nss[@]}"; do
    [[ -e /run/netns/$ns ]] || continue
    {
      echo "### ip -d addr / route / neigh / link stats ($ns)"
      ip -n "$ns" -d -s -force -batch - <<'EOF'
addr show
route show table all
neigh show
EOF
      # One shell inside the namespace for everything that is not `ip`.
      # shellcheck disable=SC2016 # expanded by that inner shell
      ip netns exec "$ns" bash -c '
        echo "### sysctl"
        for f in /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/*/rp_filter \
                 /proc/sys/net/ipv4/conf/*/arp_ignore /proc/sys/net/ipv4/conf/*/arp_announce; do
          [[ -r $f ]] && echo "${f#/proc/sys/} = $(<"$f")"
        done
        if [[ -d /sys/module/ip_vs ]]; then
          echo "### ipvsadm -Ln --stats --exact"; ipvsadm -Ln --stats --exact
          echo "### ipvsadm -Lnc"; ipvsadm -Lnc
        fi
        if [[ -d /sys/module/nf_tables ]]; then
          echo "### nft list ruleset"; nft list ruleset
        fi' 2>&1
    } >"$dir/$ns.txt" 2>&1 || true
  done
}

lab_upload_start() {
  local name="$1" rate="$2" file="$3"
  shift 3
  lab_bg client "upload-$name" curl -sS --max-time 240 --connect-timeout 5 "$@" \
    --limit-rate "$rate" -H 'Expect:' -H 'Connection: close' --data-binary "@$file" \
    -w '\ncurl: code=%{http_code} size_upload=%{size_upload}\n' "http://$LAB_VIP/upload"
}

# Not in a subshell: `wait` needs the parent.
lab_upload_result() {
  local crc=none body="" code="" line pid="${LAB_BG_PIDS[upload-$1]:-}"
  lab_wait_log "upload-$1" 'curl: code=*' 250 || true
  if [[ -n $pid ]]; then
    wait "$pid" && crc=0 || crc=$?
    unset "LAB_BG_PIDS[upload-$1]"
  fi
  while IFS= read -r line; do
    [[ $line =~ ^curl:\ code=([0-9]+) ]] && code="${BASH_REMATCH[1]}"
    [[ $line =~ ^[0-9]+$ ]] && body="$line"
  done <"$LAB_OUT/logs/upload-$1.log"
  # shellcheck disable=SC2034 # read by the scenario that sourced this file
  LAB_UPLOAD_RESULT="$crc ${code:-none} ${body:-none}"
}

# Under TCG a process costs a good fraction of a second, so sampling `ip addr` every 100 ms is
# out of reach; the kernel's own notifications (RTM_NEWADDR/RTM_DELADDR, timestamped by `ip
# -ts`) say every change, renewals of the VIP's lifetime included, the moment it happens.
lab_vip_watch_start() {
  local tag="$1" ns
  shift
  for ns in "$@"; do
    lab_bg "$ns" "vipwatch-$tag-$ns" ip -ts monitor address dev eth0
  done
  lab_bg client "vipwatch-$tag-client" ip -ts monitor neigh dev eth0
  # The state the events start from, written after the monitors listen (a change in between
  # shows twice, which the fold tolerates: an add of a present address changes nothing).
  lab_sleep 0.5
  for ns in "$@"; do
    lab_result "vipwatch.$tag.$ns.initial" "$(ip -n "$ns" -4 -o addr show dev eth0 | grep -c " $LAB_VIP/32 " || true)"
  done
}

lab_vip_watch_stop() {
  local tag="$1" ns
  shift
  lab_result "vipwatch.$tag.end_ms" "$(lab_now_ms)"
  for ns in "$@" client; do
    lab_stop "vipwatch-$tag-$ns"
  done
}

lab_node_snapshot() {
  local ns="$1" file="$2" dev devs=()
  while read -r _ dev _; do
    dev="${dev%:}"
    dev="${dev%@*}"
    # The CNI's bridge and the pods' veths are the container runtime's, not lvstun's; so is
    # kube-proxy's kube-ipvs0 (IPVS mode), which holds the ClusterIPs of the Services.
    [[ $dev == cni0 || $dev == veth* || $dev == kube-ipvs0 ]] || devs+=("$dev")
  done < <(ip -n "$ns" -o link show)
  {
    # A device that has been up once keeps its default qdisc (noqueue for tunl0) where one
    # never up shows noop; nothing but unloading ipip gets tunl0 back to noop, so the qdisc
    # name is left out.
    for dev in "${devs[@]}"; do
      echo "### ip -d addr show dev $dev"
      ip -n "$ns" -d addr show dev "$dev" | sed -E '1s/ qdisc (noop|noqueue) / qdisc - /'
    done
    echo "### ip route show table all (but the CNI's and kube-proxy's)"
    ip -n "$ns" route show table all | grep -v -e ' cni0' -e ' veth' -e ' kube-ipvs0' || true
    # shellcheck disable=SC2016 # expanded by the inner shell
    ip netns exec "$ns" env SERVICES="$LAB_SERVICE_CIDR_PREFIX" bash -c '
      # kube-proxy in IPVS mode owns the virtual servers of the Services (their ClusterIPs),
      # which come and go with the Services.
      echo "### ipvsadm -Ln (but kube-proxy'"'"'s)"
      ipvsadm -Ln | awk -v p="$SERVICES" '"'"'/^(TCP|UDP|SCTP|FWM) / { skip = index($2, p) == 1 } !skip'"'"'
      echo "### ipvsadm -L --daemon"; ipvsadm -L --daemon
      # iptables (nft backend) keeps its tables under the names of the iptables tables;
      # kube-proxy rewrites them as Services come and go.
      echo "### nft tables but iptables-nft'"'"'s (kube-proxy'"'"'s)"
      nft list tables | while read -r _ family name; do
        case "$family $name" in
          "ip filter" | "ip nat" | "ip mangle" | "ip raw" | "ip security") continue ;;
          "ip6 filter" | "ip6 nat" | "ip6 mangle" | "ip6 raw" | "ip6 security") continue ;;
        esac
        nft list table "$family" "$name"
      done
      echo "### sysctl"
      for f in /proc/sys/net/ipv4/vs/* /proc/sys/net/ipv4/conf/*/rp_filter                /proc/sys/net/ipv4/conf/*/arp_ignore /proc/sys/net/ipv4/conf/*/arp_announce; do
        case "$f" in */conf/cni0/* | */conf/veth* | */conf/kube-ipvs0/*) continue ;; esac
        [[ -r $f ]] && echo "${f#/proc/sys/} = $(<"$f")"
      done' 2>&1
  } >"$file" 2>&1
}

lab_mgmt_up() {
  [[ ${LAB_MGMT:-0} == 1 ]] || { lab_log "no management link: run-guest.sh --mgmt-port PORT"; return 1; }
  lab_modules virtio_net
  ip addr add 203.0.113.15/24 dev eth0
  ip link set eth0 up
  # The root namespace relays a unix socket to the guestfwd address; namespaces connect to the
  # socket (lab_mgmt_expose), so none of them needs a route or an interface toward the host.
  socat "UNIX-LISTEN:$LAB_MGMT_SOCK,fork,unlink-early" "TCP:203.0.113.100:$LAB_MGMT_GUEST_PORT" \
    >"$LAB_OUT/logs/mgmt-relay.log" 2>&1 </dev/null &
  LAB_BG_PIDS[mgmt-relay]=$!
  local i
  for ((i = 0; i < 100; i++)); do
    [[ -S $LAB_MGMT_SOCK ]] && break
    lab_sleep 0.1
  done
  [[ -S $LAB_MGMT_SOCK ]] || { lab_log "management relay did not start"; return 1; }
  lab_log "management link up: $LAB_MGMT_SOCK -> 203.0.113.100:$LAB_MGMT_GUEST_PORT -> host"
}

lab_mgmt_expose() {
  local ns="$1" port="${2:-$LAB_MGMT_GUEST_PORT}"
  [[ -S $LAB_MGMT_SOCK ]] || { lab_log "lab_mgmt_expose: call lab_mgmt_up first"; return 1; }
  lab_bg "$ns" "mgmt-$ns" socat "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr" \
    "UNIX-CONNECT:$LAB_MGMT_SOCK"
}

lab_cleanup() {
  local rc=$?
  trap - EXIT
  set +e
  if ((rc != 0)); then
    lab_log "scenario failed (status $rc): capturing every namespace"
    lab_capture on-failure
  fi
  local name
  for name in "${!LAB_BG_PIDS[@]}"; do
    lab_stop "$name"
  done
  exit "$rc"
}
trap lab_cleanup EXIT
# Name the command that failed, with its line, before set -e ends the scenario.
trap 'lab_log "command failed (status $?) at ${BASH_SOURCE[0]##*/}:$LINENO: $BASH_COMMAND"' ERR

# --- witnesses shared by the scenarios: what a node's kernel holds, read with its own tools -----

# lab_need_bins BIN...: exit 2 (a setup error, not a failed check) unless every BIN is an
# executable file: the host builds the lab's binaries before it boots the guest.
lab_need_bins() {
  local bin
  for bin in "$@"; do
    [[ -x $bin ]] || { lab_log "no $bin (build it first)"; exit 2; }
  done
}

lab_has_vip() {
  local out
  out="$(ip -n "$1" -4 -o addr show dev eth0)"
  [[ $out == *" $LAB_VIP/32 "* ]]
}

lab_wait_router_ready() {
  local deadline=$(($(lab_now_ms) + 60000))
  while (($(lab_now_ms) < deadline)); do
    (($(lab_count_lines "$1" '*ready to forward*') + $(lab_count_lines "$1" '*router started*ready=true*') > 0)) &&
      return 0
    lab_sleep 0.1
  done
  lab_log "timed out waiting for $1 to be ready"
  return 1
}

# lab_example_vs_rr: the example VirtualService with the recipe's round robin in place of its
# `mh` on address and port. The standalone scenarios test the recipe as ldirectord ran it, and
# assert rr's strict alternation; the pod lab runs the example as it is.
lab_example_vs_rr() {
  local vs
  vs="$(<"${LAB_REPO:-$LAB_DIR/../..}/deploy/examples/virtualservice.yaml")"
  vs="${vs/$'scheduler: mh\n  hashClientPort: true'/scheduler: rr}"
  [[ $vs == *$'\n  scheduler: rr\n'* ]] || {
    lab_log "deploy/examples/virtualservice.yaml no longer holds 'scheduler: mh' and 'hashClientPort: true' to replace"
    return 1
  }
  printf '%s\n' "$vs"
}

lab_vrrp_pair_config() {
  local vs examples="${LAB_REPO:-$LAB_DIR/../..}/deploy/examples"
  vs="$(lab_example_vs_rr)"
  vs="${vs/advertIntervalMilliseconds: 1000/advertIntervalMilliseconds: $2}"
  {
    printf '%s\n' "$vs"
    # Standalone hosts have no Node objects to rank by name: the priorities are named.
    printf '    priorities:\n'
    printf '      - {nodeName: lb1, priority: 200}\n'
    printf '      - {nodeName: lb2, priority: 100}\n'
    echo "---"
    cat "$examples/realservers.yaml"
  } >"$1"
}

# lab_recipe_up: the classic recipe's network with both web nodes prepared by hand and
# serving (www1 on web1, www2 on web2); ipip is loaded first, so that every namespace made
# after it gets a tunl0.
lab_recipe_up() {
  lab_modules ip_vs ip_vs_rr ipip
  lab_topology_up
  lab_web_prepare web1 web2
  lab_web_start web1 www1
  lab_web_start web2 www2
}

# lab_has_rule NS PREFIX: some line of NS's `ipvsadm -Sn` starts with PREFIX.
lab_has_rule() {
  local l
  while IFS= read -r l; do
    [[ $l == "$2"* ]] && return 0
  done < <(lab_exec "$1" ipvsadm -Sn 2>/dev/null)
  return 1
}

# lab_wait_rule NS PREFIX SECS: poll NS's `ipvsadm -Sn` until a rule starts with PREFIX.
lab_wait_rule() {
  lab_wait_until "$3" 0.2 "rule '$2' in $1" lab_has_rule "$1" "$2"
}

# lab_log_line NAME GLOB: print the first line of logs/NAME.log matching GLOB.
lab_log_line() {
  local l
  while IFS= read -r l; do
    # shellcheck disable=SC2053 # a glob on purpose
    [[ $l == $2 ]] && { printf '%s' "$l"; return 0; }
  done <"$LAB_OUT/logs/$1.log"
  return 1
}

# lab_synced NS FIRST LAST: NS's IPVS connection table (`ipvsadm -Lnc`) holds an ESTABLISHED
# TCP connection to the VIP's port 80 from a client port in FIRST..LAST (the sync daemon's
# copy, on a Backup).
lab_synced() {
  local line
  while IFS= read -r line; do
    if [[ $line =~ ^TCP\ .*\ ESTABLISHED\ +[0-9.]+:([0-9]+)\ +$LAB_VIP:80\  ]] &&
      ((BASH_REMATCH[1] >= $2 && BASH_REMATCH[1] <= $3)); then
      return 0
    fi
  done < <(lab_exec "$1" ipvsadm -Lnc)
  return 1
}

# lab_wait_synced NS FIRST LAST SECS: waits (bounded) until `lab_synced` holds; prints the ms
# waited, or `timeout`. The kernel's master sync daemon sends a connection at its third packet
# but flushes a half-full buffer only after two seconds (IPVS_SYNC_FLUSH_TIME), checked once a
# second: a lone connection reaches the Backup 2-3 s after it opened.
lab_wait_synced() {
  local start=${EPOCHREALTIME/./} deadline=$((${EPOCHREALTIME/./} + $4 * 1000000))
  while ((${EPOCHREALTIME/./} < deadline)); do
    if lab_synced "$1" "$2" "$3"; then
      printf '%s' $(((${EPOCHREALTIME/./} - start) / 1000))
      return 0
    fi
    lab_sleep 0.2
  done
  printf 'timeout'
  return 1
}

# lab_ipvs_conns_wait NS N ARTIFACT: saves NS's `ipvsadm -Ln --stats --exact` as ARTIFACT until
# the VIP's TCP port 80 service counts N connections (bounded: 20 reads, 10 s). Kernel 6.1 folds
# its per-CPU IPVS counters into the totals ipvsadm reads only when the rate estimator runs
# (every 2 s), so one read right after the requests may not show them all yet.
lab_ipvs_conns_wait() {
  local i proto addr c conns _
  for ((i = 0; i < 20; i++)); do
    lab_artifact "$3" lab_exec "$1" ipvsadm -Ln --stats --exact
    conns=0
    while read -r proto addr c _; do
      [[ $proto == TCP && $addr == "$LAB_VIP:80" ]] && conns=$c
    done <"$LAB_OUT/$3"
    if ((conns >= $2)); then
      lab_log "$1 IPVS counters read after $i retries (conns=$conns)"
      return 0
    fi
    lab_sleep 0.5
  done
  lab_log "$1 IPVS counters still at conns=$conns after $i reads"
  return 1
}

# lab_ipvs_by_hand NS: the classic recipe's balancer done by hand, as a witness: the VIP on
# NS's eth0 and, with ipvsadm, the TCP service VIP:80 (rr) tunnelling to web1 and web2.
lab_ipvs_by_hand() {
  ip -n "$1" addr add "$LAB_VIP/32" dev eth0
  lab_exec "$1" ipvsadm -R <<EOT
-A -t $LAB_VIP:80 -s rr
-a -t $LAB_VIP:80 -r $LAB_WEB1_IP:80 -i -w 1
-a -t $LAB_VIP:80 -r $LAB_WEB2_IP:80 -i -w 1
EOT
}

# lab_dummy_d0 NS...: readies scratch namespaces for the IPVS measurements: lo up and a dummy
# d0 holding 198.51.100.254/24 (so tunnel destinations in that range have a route).
lab_dummy_d0() {
  local ns
  for ns in "$@"; do
    ip -n "$ns" -batch - <<EOT
link set lo up
link add d0 type dummy
link set d0 up
addr add 198.51.100.254/24 dev d0
EOT
  done
}
