#!/usr/bin/env bash
# Builds holdfast and runs it on the sample config.toml (or the file given).
# Usage: scripts/run.sh [CONFIG]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin holdfast
exec ./target/release/holdfast run -c "${1:-config.toml}"
