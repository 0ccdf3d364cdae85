#!/usr/bin/env bash
# The web client in a real browser (issues 15 and 23): installs Chromium if
# it is missing, then drives the page holdfast serves (tests/webclient.rs,
# tests/webclient_close.rs) over the DevTools protocol, one browser at a
# time. With --screenshot it also refreshes docs/webclient.png.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  echo "installing: chromium"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
if [ "${1:-}" = "--screenshot" ]; then
  export HOLDFAST_SCREENSHOT="$PWD/docs/webclient.png"
fi
cargo nextest run --locked --test webclient --test webclient_close --run-ignored only --test-threads 1
