#!/usr/bin/env bash
# Runs the telnet parser fuzz target (cargo-fuzz / libFuzzer).
#
# Usage: scripts/fuzz.sh [SECONDS]   (default 60)
#
# cargo-fuzz needs nightly-only rustc flags (-Zsanitizer=address etc.). Only
# a stable toolchain is guaranteed on our machines, and stable accepts those
# flags with RUSTC_BOOTSTRAP=1, so that is the default. Set FUZZ_TOOLCHAIN
# (e.g. FUZZ_TOOLCHAIN=nightly) to use a real nightly instead.
set -euo pipefail

cd "$(dirname "$0")/.."

seconds="${1:-60}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz not found; installing it" >&2
    cargo install cargo-fuzz
fi

if [[ -n "${FUZZ_TOOLCHAIN:-}" ]]; then
    cargo "+${FUZZ_TOOLCHAIN}" fuzz run telnet_parser -- -max_total_time="${seconds}"
else
    RUSTC_BOOTSTRAP=1 cargo fuzz run telnet_parser -- -max_total_time="${seconds}"
fi
