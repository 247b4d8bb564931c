#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, idempotently:
# the package itself with its dev extras (PyPI), anvil and solc (npm, pinned in
# package-lock.json), litecoind, chromium and strace (Debian).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

missing=()
command -v litecoind >/dev/null 2>&1 || missing+=(litecoind)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v strace >/dev/null 2>&1 || missing+=(strace)  # tests/test_durability.py watches fsync
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

python -m pip install -q --disable-pip-version-check -e '.[dev]'
