#!/usr/bin/env bash
# Prepares everything the lab VM needs and caches it under ${LVSTUN_CACHE:-~/.cache/lvstun}:
#   - Debian packages on the host: qemu (TCG), kmod (modprobe in the guest, depmod here),
#     socat (guestfwd of the management link), ipvsadm, iproute2, nftables, curl, busybox-static
#     (virtme-ng's initramfs), python3-venv, skopeo (reads back the OCI images of `./dev images`);
#   - a Python venv with virtme-ng (command `vng`) at $CACHE/venv;
#   - Debian bookworm's kernel (linux-image-6.1.0-NN-amd64, which carries ip_vs, ipip, ... as
#     modules) extracted into $CACHE/kernel/<version>/, boot/vmlinuz-<version> beside
#     lib/modules/<version>, so that `vng --run .../boot/vmlinuz-<version>` finds its modules.
#
# Why a separate kernel: the host kernel has no IPVS and no ipip (see shared/LAB-NOTES.md).
#
# Idempotent: a second run only checks and takes a fraction of a second. Must run as root
# (apt-get). Progress goes to stderr; stdout gets exactly three key=value lines:
#   vng=<path to vng>   kernel=<path to vmlinuz>   kernel_version=<version>
#
# Knobs: LVSTUN_CACHE (cache folder), LVSTUN_VNG_VERSION (virtme-ng version, default pinned),
# LVSTUN_KERNEL_PKG (e.g. linux-image-6.1.0-56-amd64; default: the one cached, else the one
# linux-image-amd64 depends on).
set -euo pipefail

CACHE="${LVSTUN_CACHE:-$HOME/.cache/lvstun}"
VNG_VERSION="${LVSTUN_VNG_VERSION:-1.42}"
mkdir -p "$CACHE"

log() { echo "[lab/setup] $*" >&2; }
die() { log "error: $*"; exit 1; }

apt_updated=0
apt_update_once() {
  if [[ $apt_updated == 0 ]]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    apt_updated=1
  fi
}

# --- 1. Debian packages --------------------------------------------------------------------
# iputils-arping: the web-daemon scenario asks for the VIP by ARP on the web segments.
# skopeo: an independent reader of the OCI images `./dev images` writes (tests/tests/images.rs).
# runc, containernetworking-plugins, iptables, conntrack: the pod lab's nodes (containerd runs
# Debian's runc; the pods' network is Debian's CNI bridge; kube-proxy programs iptables).
# ShellCheck lints the lab's shell in `./dev test`.
packages=(qemu-system-x86 kmod socat ipvsadm ipset iproute2 nftables curl busybox-static python3-venv iputils-arping keepalived openssl skopeo runc containernetworking-plugins iptables conntrack shellcheck)
missing=()
for p in "${packages[@]}"; do
  if [[ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" != installed ]]; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  [[ $(id -u) == 0 ]] || die "packages missing (${missing[*]}) and not root: install them first"
  apt_update_once
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# --- 2. virtme-ng in a venv ----------------------------------------------------------------
VENV="$CACHE/venv"
stamp="$VENV/.lvstun-virtme-ng-$VNG_VERSION"
if [[ ! -x "$VENV/bin/vng" || ! -f "$stamp" ]]; then
  # Debian's own python3 first: a pyenv shim may point elsewhere from one shell to the next.
  py=/usr/bin/python3
  [[ -x $py ]] || py="$(command -v python3)" || die "no python3"
  log "creating venv $VENV with virtme-ng==$VNG_VERSION"
  rm -rf "$VENV"
  "$py" -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check "virtme-ng==$VNG_VERSION" >&2
  touch "$stamp"
fi

# --- 3. Debian's kernel, extracted -------------------------------------------------------
KROOT="$CACHE/kernel"
mkdir -p "$KROOT"
pkg="${LVSTUN_KERNEL_PKG:-}"
if [[ -z $pkg ]]; then
  # Prefer what is cached (fast, and the same kernel from one run to the next).
  cached="$(find "$KROOT" -mindepth 1 -maxdepth 1 -type d -name '*-amd64' -printf '%f\n' | sort -V | tail -n 1)"
  if [[ -n $cached && -f "$KROOT/$cached/.complete" ]]; then
    pkg="linux-image-$cached"
  else
    pkg="$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n 1)"
    if [[ -z $pkg ]]; then
      apt_update_once
      pkg="$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -n 1)"
    fi
    [[ -n $pkg ]] || die "cannot tell which linux-image-6.1.0-NN-amd64 linux-image-amd64 depends on"
  fi
fi
kver="${pkg#linux-image-}"
kdir="$KROOT/$kver"
if [[ ! -f "$kdir/.complete" ]]; then
  log "fetching $pkg"
  work="$(mktemp -d "$KROOT/.tmp.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && apt-get download -q "$pkg" >&2) || {
    apt_update_once
    (cd "$work" && apt-get download -q "$pkg" >&2)
  }
  deb="$(ls "$work"/*.deb)"
  log "extracting $(basename "$deb")"
  mkdir -p "$work/tree"
  dpkg -x "$deb" "$work/tree"
  [[ -f "$work/tree/boot/vmlinuz-$kver" ]] || die "$deb has no boot/vmlinuz-$kver"
  [[ -d "$work/tree/lib/modules/$kver" ]] || die "$deb has no lib/modules/$kver"
  # Debian's package leaves modules.dep to its postinst: build it here so modprobe works.
  log "depmod $kver"
  depmod -b "$work/tree" "$kver"
  touch "$work/tree/.complete"
  rm -rf "$kdir"
  mv "$work/tree" "$kdir"
  rm -rf "$work"
  trap - EXIT
fi

log "ready: kernel $kver, $("$VENV/bin/vng" --version 2>/dev/null | head -n 1)"
echo "vng=$VENV/bin/vng"
echo "kernel=$kdir/boot/vmlinuz-$kver"
echo "kernel_version=$kver"
