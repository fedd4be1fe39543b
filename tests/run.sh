#!/usr/bin/env bash
# The whole test suite: lint, format, types, unit tests, root tests (real BPF, veth,
# processes) and the guest-kernel tests (Debian 6.1 under qemu). Run as root after setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== ruff (lint, format) and mypy"
.venv/bin/ruff check profiler servers tests benchmarks
.venv/bin/ruff format --check profiler servers tests benchmarks
.venv/bin/mypy profiler servers

echo "== guest kernel (Debian stock, kprobes + fentry)"
bash tests/guest/fetch_kernel.sh

echo "== pytest"
.venv/bin/python -m pytest -p no:cacheprovider "$@"
