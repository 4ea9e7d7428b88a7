#!/usr/bin/env bash
# The node image's own binary against a real kernel: `lvstun-node balancer --config` on lb1,
# started from the unpacked root filesystem of the lvstun/lvstun-node image under chroot (as a
# container runtime would start the entrypoint), programs the seed's service (deploy/examples/:
# VIP 192.0.2.100:80 rr, web1 198.51.100.10, web2 198.51.100.130); ipvsadm is the witness and
# the client's requests reach both web nodes. IPVS only (--vip-owner none, the VIP put on lb1's
# eth0 by hand, web nodes prepared by hand): the balancer's behaviour is balancer-standalone.sh's
# subject; this one proves that the image holds everything the daemon needs to do its job.
#
# The host (tests/tests/images.rs) builds the image, unpacks its layers into IMAGE_ROOTFS (a
# folder inside this run's folder, so the guest sees it read-write) and passes the image
# config's entrypoint and PATH as IMAGE_ENTRYPOINT and IMAGE_PATH. Inside the root filesystem
# this script mounts what a runtime would: a fresh proc at /proc (the daemon writes
# /proc/sys/net/ipv4/vs/expire_nodest_conn, resolved in the writer's network namespace) and
# $LAB_OUT at the same path (a volume: the config file and the state folder keep their paths).
# The daemon's environment is only the image's PATH and RUST_LOG.
#
# Results and artifacts (asserted by tests/tests/images.rs):
#   version             `--version` of the entrypoint under chroot
#   exe, root           readlink of /proc/PID/exe and /proc/PID/root of the running daemon
#   maps.txt            its /proc/PID/maps: every file it mapped (binary, loader, libraries)
#   start_pass          the daemon's first pass; sysctl_set its log line setting the sysctl;
#                       expire_nodest_conn the value lb1's kernel holds afterwards
#   witness-1.txt, save-1.txt   ipvsadm -Ln, and -Sn sorted, once both real servers are at
#                       weight 1 (their health checks passed)
#   client-curl.txt     REQUESTS requests from the client to the VIP
#   state-lb1/balancer-owned.json   the daemon's state, written through the mounted run folder
set -euo pipefail
# shellcheck source=tests/lab/topology.sh
. "$LAB_DIR/topology.sh"

ROOTFS="${IMAGE_ROOTFS:?set by the host: the unpacked image}"
ENTRY="${IMAGE_ENTRYPOINT:?set by the host: the image entrypoint}"
IMAGE_PATH="${IMAGE_PATH:-/usr/local/bin:/usr/sbin}"
REQUESTS="${REQUESTS:-4}"
CFG="$LAB_OUT/lvstun.yaml"
STATE="$LAB_OUT/state-lb1"
CHROOT="$(command -v chroot)"
[[ -x $ROOTFS$ENTRY ]] || { lab_log "no $ROOTFS$ENTRY (unpack the image first)"; exit 2; }

lab_recipe_up
ip -n lb1 addr add "$LAB_VIP/32" dev eth0
{
  lab_example_vs_rr
  echo "---"
  cat "$LAB_REPO/deploy/examples/realservers.yaml"
} >"$CFG"

# --- the image's root filesystem, as a runtime prepares it ---------------------------------------
# The mounts are made in the guest's mount namespace before `ip netns exec`, whose private copy
# of that namespace inherits them.
mkdir -p "$ROOTFS/proc" "$ROOTFS$LAB_OUT"
mount -t proc proc "$ROOTFS/proc"
mount --bind "$LAB_OUT" "$ROOTFS$LAB_OUT"
lab_result version "$(env -i "$CHROOT" "$ROOTFS" "$ENTRY" --version)"

# --- 1. programmed --------------------------------------------------------------------------------
t0=$(lab_now_ms)
lab_bg lb1 balancer env -i RUST_LOG=info "PATH=$IMAGE_PATH" "$CHROOT" "$ROOTFS" "$ENTRY" \
  balancer --config "$CFG" --node-name lb1 --state-dir "$STATE" --health-port 9101 \
  --health-address 127.0.0.1 --vip-owner none
# ip netns exec, env and chroot each exec the next: the pid lab_bg saw is the daemon's.
pid="${LAB_BG_PIDS[balancer]}"
lab_wait_log balancer '*reconciled trigger=start*' 60
lab_result start_pass "$(lab_log_line balancer '*reconciled trigger=start*')"
lab_result sysctl_set "$(lab_log_line balancer '*net.ipv4.vs sysctl*' || echo none)"
lab_result exe "$(readlink "/proc/$pid/exe")"
lab_result root "$(readlink "/proc/$pid/root")"
lab_artifact maps.txt cat "/proc/$pid/maps"
lab_wait_rule lb1 "-a -t $LAB_VIP:80 -r $LAB_WEB1_IP:80 -i -w 1" 30
lab_wait_rule lb1 "-a -t $LAB_VIP:80 -r $LAB_WEB2_IP:80 -i -w 1" 30
lab_result programmed_ms $(($(lab_now_ms) - t0))
lab_artifact witness-1.txt lab_exec lb1 ipvsadm -Ln
lab_exec lb1 ipvsadm -Sn | sort >"$LAB_OUT/save-1.txt"
lab_result expire_nodest_conn "$(lab_exec lb1 cat /proc/sys/net/ipv4/vs/expire_nodest_conn)"

# --- 2. traffic -----------------------------------------------------------------------------------
urls=()
for ((i = 0; i < REQUESTS; i++)); do urls+=("http://$LAB_VIP/"); done
lab_artifact client-curl.txt lab_exec client curl -sS -i --max-time 10 --connect-timeout 5 \
  -H 'Connection: close' "${urls[@]}"
lab_result requests "$REQUESTS"

# --- the daemon stops cleanly; the mounts go with it ----------------------------------------------
lab_stop balancer
umount "$ROOTFS$LAB_OUT" "$ROOTFS/proc"
lab_log "done"
