#!/usr/bin/env bash
# Boots the lab VM (Debian's kernel under qemu via virtme-ng, host root shared read-only) and
# runs one scenario script in it.
#
# Usage: run-guest.sh [options] OUTDIR SCENARIO
#   OUTDIR     host folder for everything the run leaves (created; shared read-write with the
#              guest). Results: OUTDIR/exit-code (the scenario's status), OUTDIR/guest.log,
#              OUTDIR/results.txt and any artifacts the scenario wrote.
#   SCENARIO   a scenario script path, or a name under tests/lab/scenarios/ (with or without .sh)
# Options:
#   --timeout SECS       wall-clock bound of the whole VM run (default $LVSTUN_LAB_TIMEOUT or 600)
#   --mgmt-port PORT     give the guest a management link to the host's 127.0.0.1:PORT (below)
#   --env KEY=VALUE      pass a variable to the scenario (repeatable)
#   --verbose            keep the guest's kernel console in OUTDIR/console.log
#
# Environment: LVSTUN_VNG / LVSTUN_KERNEL (skip setup.sh when both are given), LVSTUN_LAB_KVM
# (auto | 0 | 1; default auto: KVM only when a probe boot proves it works, else TCG),
# LVSTUN_LAB_BIN (folder of the project's built binaries; default <repo>/target/release),
# LVSTUN_LAB_MEMORY (default 1G), LVSTUN_LAB_CPUS (default 2), LVSTUN_LAB_IPV6 (1 keeps IPv6 on
# in the guest; default off: ipv6.disable=1).
#
# Network safety: the VM gets no network at all (vng's default is -net none) unless --mgmt-port
# is given; then exactly one qemu user-mode link with restrict=on (the guest can reach nothing
# through it) on 203.0.113.0/24, with one guestfwd: guest 203.0.113.100:$LVSTUN_LAB_MGMT_GUEST_PORT
# (default 6443) -> socat -> host 127.0.0.1:PORT.
#
# Exit status: the scenario's, 124 when the VM ran out of time, 125 when the guest never
# reported a status (boot failure: see OUTDIR/vng.log, rerun with --verbose).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
CACHE="${LVSTUN_CACHE:-$HOME/.cache/lvstun}"

log() { echo "[lab/run-guest] $*" >&2; }
die() { log "error: $*"; exit 2; }

timeout_s="${LVSTUN_LAB_TIMEOUT:-600}"
mgmt_port=""
verbose=0
extra_env=()
while (($#)); do
  case "$1" in
    --timeout) timeout_s="$2"; shift 2 ;;
    --mgmt-port) mgmt_port="$2"; shift 2 ;;
    --env) extra_env+=("$2"); shift 2 ;;
    --verbose) verbose=1; shift ;;
    -h|--help) sed -n '2,30p' "${BASH_SOURCE[0]}"; exit 0 ;;
    --) shift; break ;;
    -*) die "unknown option $1" ;;
    *) break ;;
  esac
done
(($# == 2)) || die "usage: run-guest.sh [options] OUTDIR SCENARIO (see --help)"
[[ $timeout_s =~ ^[0-9]+$ ]] || die "--timeout wants whole seconds"
[[ -z $mgmt_port || $mgmt_port =~ ^[0-9]+$ ]] || die "--mgmt-port wants a port number"

mkdir -p "$1"
out="$(cd "$1" && pwd)"
scenario="$2"
if [[ ! -f $scenario ]]; then
  scenario="$here/scenarios/${2%.sh}.sh"
fi
[[ -f $scenario ]] || die "no scenario $2 (looked in $here/scenarios/)"
scenario="$(cd "$(dirname "$scenario")" && pwd)/$(basename "$scenario")"

# --- kernel and vng ------------------------------------------------------------------------
vng="${LVSTUN_VNG:-}"
kernel="${LVSTUN_KERNEL:-}"
if [[ -z $vng || -z $kernel ]]; then
  while IFS='=' read -r k v; do
    case "$k" in vng) vng="$v" ;; kernel) kernel="$v" ;; esac
  done < <("$here/setup.sh")
fi
[[ -x $vng ]] || die "vng not found ($vng)"
[[ -f $kernel ]] || die "kernel not found ($kernel)"
# vng calls virtme-run through PATH.
PATH="$(dirname "$vng"):$PATH"
export PATH

# --- KVM only when it really works ---------------------------------------------------------
# On these machines /dev/kvm exists but nested KVM fails (MSR errors) or hangs: prove it with
# a tiny boot (the kernel panics at once for want of a root fs and qemu exits) and remember the
# verdict per host kernel.
kvm_works() {
  [[ -r /dev/kvm && -w /dev/kvm ]] || return 1
  local verdict
  verdict="$CACHE/kvm-probe.$(uname -r)"
  if [[ -f $verdict ]]; then
    [[ "$(<"$verdict")" == yes ]]
    return
  fi
  local tmp
  tmp="$(mktemp -d)"
  local ok=no
  # (in a subshell: when qemu aborts, bash's own "Aborted" report goes to /dev/null too)
  if (timeout 20 qemu-system-x86_64 -accel kvm -cpu host -m 256 -smp 1 -nodefaults \
      -display none -no-reboot -serial "file:$tmp/serial" -kernel "$kernel" \
      -append "console=ttyS0 panic=-1 root=/dev/lvstun-none" </dev/null) >/dev/null 2>&1 &&
      grep -q "Kernel panic" "$tmp/serial"; then
    ok=yes
  fi
  rm -rf "$tmp"
  echo "$ok" >"$verdict"
  log "KVM probe: $ok (cached in $verdict)"
  [[ $ok == yes ]]
}
kvm_flag=(--disable-kvm)
case "${LVSTUN_LAB_KVM:-auto}" in
  1|yes|on) kvm_flag=() ;;
  0|no|off) ;;
  auto) if kvm_works; then kvm_flag=(); fi ;;
  *) die "LVSTUN_LAB_KVM must be auto, 0 or 1" ;;
esac

# --- what the guest gets ---------------------------------------------------------------------
rm -f "$out/exit-code" "$out/results.txt" "$out/timing.env"
bin_dir="${LVSTUN_LAB_BIN:-$repo/target/release}"
{
  printf 'export LAB_OUT=%q\n' "$out"
  printf 'export LAB_DIR=%q\n' "$here"
  printf 'export LAB_REPO=%q\n' "$repo"
  printf 'export LAB_BIN=%q\n' "$bin_dir"
  printf 'export LAB_SCENARIO=%q\n' "$scenario"
  printf 'export LAB_MGMT=%q\n' "$([[ -n $mgmt_port ]] && echo 1 || echo 0)"
  printf 'export LAB_MGMT_GUEST_PORT=%q\n' "${LVSTUN_LAB_MGMT_GUEST_PORT:-6443}"
  for kv in "${extra_env[@]}"; do
    k="${kv%%=*}"
    [[ $kv == *=* && $k =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "--env wants KEY=VALUE, got $kv"
    printf 'export %s=%q\n' "$k" "${kv#*=}"
  done
} >"$out/lab.env"

args=(--run "$kernel" "${kvm_flag[@]}" --force-9p
      --memory "${LVSTUN_LAB_MEMORY:-1G}" --cpus "${LVSTUN_LAB_CPUS:-2}"
      --rwdir "$out" --exec "bash $(printf %q "$here/guest-entry.sh") $(printf %q "$out")")
if [[ -n $mgmt_port ]]; then
  gport="${LVSTUN_LAB_MGMT_GUEST_PORT:-6443}"
  [[ $gport =~ ^[0-9]+$ ]] || die "LVSTUN_LAB_MGMT_GUEST_PORT wants a port number"
  # (--opt=value form: argparse takes a separate value that starts with '-' for an option)
  args+=("--qemu-opts=-netdev 'user,id=lab0,restrict=on,net=203.0.113.0/24,host=203.0.113.2,guestfwd=tcp:203.0.113.100:$gport-cmd:socat - TCP:127.0.0.1:$mgmt_port' -device virtio-net-pci,netdev=lab0")
fi
# IPv4 only unless asked: no IPv6 link-local addresses, DAD or router solicitations to muddy
# the neighbour tables and captures of IPv4 scenarios.
[[ ${LVSTUN_LAB_IPV6:-0} == 1 ]] || args+=(--append ipv6.disable=1)
((verbose)) && args+=(--verbose)

log "booting $(basename "$kernel") (${kvm_flag[*]:-kvm}), scenario $(basename "$scenario"), out $out, timeout ${timeout_s}s"
start=$(date +%s.%N)
set +e
# timeout signals its whole process group, so qemu (a grandchild of vng) goes too.
timeout --kill-after=15 "$timeout_s" "$vng" "${args[@]}" </dev/null \
  >"$out/$( ((verbose)) && echo console || echo vng).log" 2>&1
vng_rc=$?
set -e
end=$(date +%s.%N)
wall=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
echo "vm_wall_s=$wall" >>"$out/timing.env"

if ((vng_rc == 124 || vng_rc == 137)); then
  log "timed out after ${timeout_s}s (wall ${wall}s); see $out/guest.log"
  exit 124
fi
if [[ ! -f $out/exit-code ]]; then
  log "the guest reported no status (vng exited $vng_rc after ${wall}s); see $out/vng.log, rerun with --verbose"
  exit 125
fi
rc="$(<"$out/exit-code")"
log "scenario exited $rc after ${wall}s wall; out $out"
exit "$rc"
