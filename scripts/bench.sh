#!/usr/bin/env bash
# Benchmarks holdfast against a direct connection, HAProxy and socat.
#
#   scripts/bench.sh                  full run (about two minutes)
#   scripts/bench.sh --quick          smaller run (about 20 seconds)
#   scripts/bench.sh --update-readme  full run, then rewrite README's table and plot
#   scripts/bench.sh --guard          only the idle-memory guard (CI): about 15 s once built
#
# Prints a markdown table; writes target/bench/results.json, results.md and
# latency.svg. Everything runs on 127.0.0.1.
#
# Every run that measures idle memory fails (exit 1, a loud FAIL line) when
# one idle holdfast telnet connection costs more of the proxy's RSS than
# HOLDFAST_IDLE_KIB_MAX KiB (connected, said nothing) or
# HOLDFAST_IDLE_LOGIN_KIB_MAX KiB (logged in); see docs/benchmarks.md,
# "Idle memory". The goal is 2.0 KiB for both; the guard is 2.5 KiB for a
# silent connection (issue 25) and, until logged-in sessions get to the
# goal, just above today's figure for them, so that nothing makes either
# worse unnoticed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Measured 2026-12-07 18:37 UTC (3,000 connections), after the third
# layout pass (a 768-byte task): 1.49 silent, 2.03 logged in (9,900
# connections: 1.43 and 1.83; the figures move by a tenth or two between
# sittings). The goal is 2.0 (issue 25); the guard is 2.5 for both.
max_idle_kib="${HOLDFAST_IDLE_KIB_MAX:-2.5}"
max_idle_login_kib="${HOLDFAST_IDLE_LOGIN_KIB_MAX:-2.5}"
args=()
guard=0
for a in "$@"; do
    case "$a" in
        --guard) guard=1 ;;
        *) args+=("$a") ;;
    esac
done
if ((guard)); then
    # holdfast alone, idle memory alone: 3,000 connections, as issue 25 measures.
    args=(--modes holdfast --only idle --idle-sessions 3000 "${args[@]}")
fi

# What holdfast is compared with, from Debian's packages.
need=()
if ((!guard)); then
    command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
    command -v socat >/dev/null 2>&1 || need+=(socat)
fi
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

exec cargo bench --bench bench -- \
    --max-idle-kib "$max_idle_kib" --max-idle-login-kib "$max_idle_login_kib" "${args[@]}"
