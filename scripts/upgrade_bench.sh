#!/bin/sh
# Upgrade figures (issues 13 and 24): handover time for N sessions and the
# longest relay stall players see during it, with a release build of
# holdfast; the same with W of the sessions WebSocket players; then D
# detached sessions at full playback.
#   scripts/upgrade_bench.sh [SESSIONS] [BATCH] [DETACHED] [WEBSOCKET]
# SESSIONS defaults to 9800: two descriptors per session, plus a batch's
# duplicates in flight (BATCH sessions, default 100, two each), must fit an
# open-file limit of 20000. BATCH sets HOLDFAST_UPGRADE_BATCH (sessions per
# batch, 1 to 200; holdfast's own default is 200). DETACHED (default 1000;
# 0 skips it) detached sessions, each with a 256 KiB playback. WEBSOCKET
# (default 500; 0 skips that run) of the SESSIONS come in by the WebSocket
# door, the three subprotocols in turn.
set -eu
cd "$(dirname "$0")/.."
N=${1:-9800}
B=${2:-100}
D=${3:-1000}
W=${4:-500}
cargo build --release --locked --bin holdfast
HOLDFAST_BIN=$PWD/target/release/holdfast HOLDFAST_UPGRADE_SESSIONS=$N \
  HOLDFAST_UPGRADE_BATCH=$B \
  cargo test --locked --test upgrade -- --ignored --nocapture bench_handover_time_and_stall
if [ "$W" -gt 0 ]; then
  HOLDFAST_BIN=$PWD/target/release/holdfast HOLDFAST_UPGRADE_SESSIONS=$N \
    HOLDFAST_UPGRADE_BATCH=$B HOLDFAST_UPGRADE_WS=$W \
    cargo test --locked --test upgrade -- --ignored --nocapture bench_handover_time_and_stall
fi
if [ "$D" -gt 0 ]; then
  HOLDFAST_BIN=$PWD/target/release/holdfast HOLDFAST_UPGRADE_DETACHED=$D \
    cargo test --locked --test upgrade_tx -- --ignored --nocapture bench_detached_sessions_at_full_playback
fi
