#!/usr/bin/env bash
# Installs what stackprof needs on a fresh Debian (as root) and builds the BPF objects.
# Idempotent: a second run only checks (and refreshes profiler/assets/ after a rebuild).
set -euo pipefail
cd "$(dirname "$0")"

# sockperf: third-party load; prometheus: a real scraper; nftables, ethtool: faults, NAPI.
APT_PACKAGES=(clang llvm libbpf-dev libbpf1 bpftool iproute2 tmux python3-venv make gcc
    sockperf prometheus nftables ethtool)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    # No recommends; policy-rc.d keeps prometheus' service from starting (tests start their own).
    own_policy=false
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        own_policy=true
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
    if $own_policy; then rm -f /usr/sbin/policy-rc.d; fi
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if ! .venv/bin/python -c "import profiler, hdrh, rich, pandas, pyroute2, pytest, prometheus_client, pyarrow, hypothesis" 2>/dev/null \
    || [ pyproject.toml -nt .venv/.installed ]; then
    .venv/bin/pip install -q --disable-pip-version-check -e ".[dev]"
    touch .venv/.installed
fi

make -s -C bpf

# The objects and the shared header as package data (profiler/resources.py), so a wheel
# built from here carries them: each copied when it differs, to a temporary name in the
# same folder renamed over the old one (a reader never sees half a file), mtime kept.
mkdir -p profiler/assets
for src in bpf/.output/*.bpf.o bpf/stackprof.h; do
    dst="profiler/assets/$(basename "$src")"
    if ! cmp -s "$src" "$dst" || [ "$src" -nt "$dst" ] || [ "$src" -ot "$dst" ]; then
        cp -p "$src" "$dst.tmp.$$"
        mv -f "$dst.tmp.$$" "$dst"
    fi
done
for dst in profiler/assets/*; do  # objects bpf/ no longer builds, leftovers of a killed copy
    [ -e "bpf/.output/$(basename "$dst")" ] || [ "$dst" = profiler/assets/stackprof.h ] \
        || rm -f "$dst"
done
