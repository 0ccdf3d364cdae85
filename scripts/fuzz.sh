#!/usr/bin/env bash
# Runs the fuzz targets (cargo-fuzz / libFuzzer) for a bounded time each:
# telnet_parser (the telnet byte stream), telnet_policy (backend and player
# bytes through MCCP2 and the negotiation policy), player_input (what a player sends:
# line splitting, login and spoof recognition) and config (the TOML loader).
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]   (default 60 s, all targets)
#        scripts/fuzz.sh --check   only type-check the targets (CI, stable, no
#                                  cargo-fuzz needed), so they cannot rot
#
# The fuzz crate is a workspace of its own; its Cargo.lock (not kept in git)
# starts as a copy of the main one, so the targets build against the
# versions holdfast ships with.
#
# cargo-fuzz needs nightly-only rustc flags (-Zsanitizer=address etc.). Only
# a stable toolchain is guaranteed on our machines, and stable accepts those
# flags with RUSTC_BOOTSTRAP=1, so that is the default. Set FUZZ_TOOLCHAIN
# (e.g. FUZZ_TOOLCHAIN=nightly) to use a real nightly instead.
set -euo pipefail

cd "$(dirname "$0")/.."

[ -f fuzz/Cargo.lock ] || cp Cargo.lock fuzz/Cargo.lock

if [ "${1:-}" = "--check" ]; then
    exec cargo check --manifest-path fuzz/Cargo.toml --bins
fi

seconds="${1:-60}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz not found; installing it" >&2
    cargo install cargo-fuzz
fi

shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(telnet_parser telnet_policy player_input config)

for t in "${targets[@]}"; do
    echo "== fuzzing $t for ${seconds}s" >&2
    if [[ -n "${FUZZ_TOOLCHAIN:-}" ]]; then
        cargo "+${FUZZ_TOOLCHAIN}" fuzz run "$t" -- -max_total_time="${seconds}"
    else
        RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" -- -max_total_time="${seconds}"
    fi
done
