#!/usr/bin/env bash
# First thing the lab guest runs (vng --exec). Usage: guest-entry.sh OUTDIR
#
# OUTDIR is the host folder shared read-write with the guest (--rwdir); run-guest.sh wrote
# OUTDIR/lab.env there. This script loads it, runs the scenario with all its output in
# OUTDIR/guest.log and leaves the scenario's exit status in OUTDIR/exit-code. The VM powers off
# when this script returns.
#
# Why a file for the exit status: on these hosts the guest has no udev, so virtme-ng cannot
# find its virtio-serial ports and vng itself exits 255 whatever the script returned.
set -u
out="$1"
# shellcheck source=/dev/null
. "$out/lab.env"
exec >"$out/guest.log" 2>&1 </dev/null
read -r up _ </proc/uptime
echo "guest_boot_s=$up" >>"$out/timing.env"
echo "[lab] guest up after ${up}s (kernel $(</proc/sys/kernel/osrelease)); running $LAB_SCENARIO"
cd "$out" || exit 1
bash "$LAB_SCENARIO"
rc=$?
read -r up _ </proc/uptime
echo "guest_end_s=$up" >>"$out/timing.env"
echo "[lab] scenario exited $rc at ${up}s"
echo "$rc" >"$out/exit-code"
