#!/usr/bin/env bash
# Benchmarks holdfast against a direct connection, HAProxy and socat.
#
#   scripts/bench.sh                  full run (about two minutes)
#   scripts/bench.sh --quick          smaller run (about 20 seconds)
#   scripts/bench.sh --update-readme  full run, then rewrite README's table and plot
#
# Prints a markdown table; writes target/bench/results.json, results.md and
# latency.svg. Everything runs on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

# What holdfast is compared with, from Debian's packages.
need=()
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v socat >/dev/null 2>&1 || need+=(socat)
if ((${#need[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "bench.sh: installing ${need[*]}" >&2
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
fi

# 10,000 idle sessions need 20,000 descriptors in the proxy: raise the
# limit as far as this machine lets us (the bench caps the session count
# to what fits and says so).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

exec cargo bench --bench bench -- "$@"
