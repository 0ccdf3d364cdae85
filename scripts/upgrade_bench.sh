#!/bin/sh
# Upgrade figures (issue 13): handover time for N sessions and the longest
# relay stall players see during it, with a release build of holdfast.
#   scripts/upgrade_bench.sh [SESSIONS]   (default 9800: two descriptors
#   per session, plus a batch of 200 lent during the handover, must fit
#   an open-file limit of 20000)
set -eu
cd "$(dirname "$0")/.."
N=${1:-9800}
cargo build --release --locked --bin holdfast
HOLDFAST_BIN=$PWD/target/release/holdfast HOLDFAST_UPGRADE_SESSIONS=$N \
  cargo test --locked --test upgrade -- --ignored --nocapture bench_handover_time_and_stall
