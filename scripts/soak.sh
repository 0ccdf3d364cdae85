#!/usr/bin/env bash
# Chaos soak (issue 8): hundreds of players (telnet and WebSocket, some
# with MCCP2) log in through holdfast and keep sending numbered lines while
# the games behind it are killed, frozen, stopped and restarted, failovers
# and SIGHUP reloads are triggered, holdfast is upgraded (SIGUSR2; some
# upgrades' new process dies mid-handover) and nats-server is killed and
# restarted. At the end every line is accounted for from the games' logs,
# every player must still be connected and logged in, and the proxy's
# memory, fds and sessions must be back where they were.
#
#   scripts/soak.sh [--minutes N] [--players N] [--seed S] [other holdfast-soak options]
#
# Prints a summary table; writes target/soak/summary.json (and the logs of
# every process next to it; under $CARGO_TARGET_DIR when that is set, where
# cargo builds the binaries). Exit status 0 = pass. docs/soak.md says more.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=1
players=50
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) minutes="$2"; shift 2 ;;
        --players) players="$2"; shift 2 ;;
        -h|--help)
            sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
            exit 0 ;;
        *) extra+=("$1"); shift ;;
    esac
done

nats=$(command -v nats-server || echo /usr/sbin/nats-server)
if [ ! -x "$nats" ]; then
    echo "soak.sh: nats-server not found (apt-get install nats-server)" >&2
    exit 2
fi

# Each player holds a socket here and holdfast two (player + game); each
# game one per player.
need=$(( players * 3 + 1024 ))
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$need" ]; then
    echo "soak.sh: the hard fd limit ($hard) is below $need; raise it or use fewer players" >&2
    exit 2
fi
ulimit -n "$( [ "$hard" = unlimited ] && echo "$need" || echo "$hard" )"

# Where cargo puts the binaries: the soak runs the ones it just built, not
# a stale target/ of this checkout.
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --bin holdfast --bin fakemush --bin holdfast-soak
mkdir -p "$target/soak"
exec "$target/release/holdfast-soak" --minutes "$minutes" --players "$players" \
    --nats-server "$nats" --dir "$target/soak" "${extra[@]+"${extra[@]}"}"
