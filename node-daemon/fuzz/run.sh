#!/usr/bin/env bash
# Bounded fuzzing run of the VRRP advertisement decoder: ./run.sh [SECONDS] (default 60).
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
secs="${1:-60}"
[[ $secs =~ ^[0-9]+$ ]] || { echo "usage: run.sh [SECONDS]" >&2; exit 2; }
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is not installed: cargo install cargo-fuzz" >&2; exit 2; }
mkdir -p corpus/advert_decode
exec cargo +nightly fuzz run advert_decode corpus/advert_decode -- \
  -max_total_time="$secs" -rss_limit_mb=1024 -max_len=1500
