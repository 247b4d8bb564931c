#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine, idempotently:
# the package itself with its dev extras (PyPI), anvil and solc (npm, pinned in
# package-lock.json), litecoind, chromium and strace (Debian), and the runtime libraries of
# the MultiChain node when its binaries are beside the repository (Debian).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

missing=()
command -v litecoind >/dev/null 2>&1 || missing+=(litecoind)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v strace >/dev/null 2>&1 || missing+=(strace)  # tests/test_durability.py watches fsync
# The MultiChain 2.3.3 node beside the repository (../shared/multichain-node/bin, or
# $MULTICHAIN_BIN_DIR) needs these runtime libraries (listed in its README); install them
# whenever the binaries are there, so that the live MultiChain tests run.
MC_BIN="${MULTICHAIN_BIN_DIR:-../shared/multichain-node/bin}"
if [ -x "$MC_BIN/multichaind" ]; then
  for lib in libboost-chrono1.74.0 libboost-filesystem1.74.0 libboost-program-options1.74.0 \
             libboost-thread1.74.0 libevent-2.1-7 libevent-core-2.1-7 libevent-pthreads-2.1-7; do
    dpkg -s "$lib" >/dev/null 2>&1 || missing+=("$lib")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

python -m pip install -q --disable-pip-version-check -e '.[dev]'
