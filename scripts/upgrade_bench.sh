#!/bin/sh
# Upgrade figures (issue 13): handover time for N sessions and the longest
# relay stall players see during it, with a release build of holdfast.
#   scripts/upgrade_bench.sh [SESSIONS] [BATCH]
# SESSIONS defaults to 9800: two descriptors per session, plus a batch's
# duplicates in flight (BATCH sessions, default 100, two each), must fit an
# open-file limit of 20000. BATCH sets HOLDFAST_UPGRADE_BATCH (sessions per
# batch, 1 to 200; holdfast's own default is 200).
set -eu
cd "$(dirname "$0")/.."
N=${1:-9800}
B=${2:-100}
cargo build --release --locked --bin holdfast
HOLDFAST_BIN=$PWD/target/release/holdfast HOLDFAST_UPGRADE_SESSIONS=$N \
  HOLDFAST_UPGRADE_BATCH=$B \
  cargo test --locked --test upgrade -- --ignored --nocapture bench_handover_time_and_stall
