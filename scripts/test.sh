#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests
# talk to (nats-server, ngircd from Debian's packages; cargo-nextest), then
# runs every test. Usage: scripts/test.sh [extra nextest args]
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need_apt+=(nats-server)
command -v ngircd >/dev/null 2>&1 || [ -x /usr/sbin/ngircd ] || need_apt+=(ngircd)
# The bus and IRC TLS tests make throw-away certificates with openssl.
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# ngircd's package starts a system daemon on 6667; the tests start their
# own on dynamic ports and do not need it.

if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi

cargo build --all-targets --locked
cargo nextest run --all-targets --locked --no-fail-fast "$@"
