#!/usr/bin/env bash
# A real MUD client against holdfast: TinyFugue (Debian package tf5) in a
# 132x50 tmux window, connected through holdfast to the scripted game
# (fakemush --mccp, so the game compresses toward holdfast too). Logs in,
# uses a GA prompt, kills and restarts the game, and checks the screen
# shows the notices and no telnet garbage, that the restarted game got
# tf's window size without tf being asked again, and that tf took
# holdfast's MCCP2. Not part of `cargo test`: needs tf and tmux.
#
#   scripts/tinyfugue.sh            # builds, runs, prints the screen
#   KEEP=1 scripts/tinyfugue.sh     # keep the scratch dir for a look
set -euo pipefail

cd "$(dirname "$0")/.."
for tool in tf tmux; do
    command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install tf5 tmux)" >&2; exit 2; }
done
cargo build --quiet --bins
BIN=${CARGO_TARGET_DIR:-target}/debug

DIR=$(mktemp -d /tmp/holdfast-tf.XXXXXX)
SESSION="holdfast-tf-$$"
GAME_PID=""
PROXY_PID=""
cleanup() {
    tmux kill-session -t "$SESSION" 2>/dev/null || true
    [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null || true
    [ -n "$GAME_PID" ] && kill -9 "$GAME_PID" 2>/dev/null || true
    if [ -z "${KEEP:-}" ]; then rm -rf "$DIR"; else echo "kept $DIR"; fi
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*" >&2
    echo "----- screen -----" >&2
    screen >&2 || true
    echo "----- proxy log (tail) -----" >&2
    tail -n 30 "$DIR/proxy.log" >&2 || true
    exit 1
}

# Waits (up to 10 s) for a file to be non-empty.
wait_file() {
    for _ in $(seq 200); do [ -s "$1" ] && return 0; sleep 0.05; done
    fail "$1 never appeared"
}

screen() { tmux capture-pane -p -t "$SESSION" -S -200; }

# Waits (up to 10 s) until the screen contains $1 (fixed string) $2 times.
wait_screen() {
    local want=${2:-1}
    for _ in $(seq 200); do
        [ "$(screen | grep -cF -- "$1" || true)" -ge "$want" ] && return 0
        sleep 0.05
    done
    fail "never saw '$1' (x$want) on the screen"
}

start_game() {
    rm -f "$DIR/game.ready"
    "$BIN/fakemush" --listen "$1" --ready-file "$DIR/game.ready" --log "$DIR/game.log" --mccp \
        >>"$DIR/game.out" 2>&1 &
    GAME_PID=$!
    disown "$GAME_PID" # killed on purpose; no "Killed" job report
    wait_file "$DIR/game.ready"
}

start_game 127.0.0.1:0
GAME_ADDR=$(head -n1 "$DIR/game.ready")

cat >"$DIR/holdfast.toml" <<EOF
game = "Test MUSH"
[listen]
addrs = ["127.0.0.1:0"]
[[backends]]
name = "primary"
addr = "$GAME_ADDR"
[heartbeat]
user = "heartbeat"
password = "hbpass"
interval = "500ms"
timeout = "500ms"
[telnet]
mccp = true
backend_mccp = true
EOF
RUST_LOG=holdfast=debug "$BIN/holdfast" run -c "$DIR/holdfast.toml" --ready-file "$DIR/proxy.ready" \
    2>"$DIR/proxy.log" &
PROXY_PID=$!
wait_file "$DIR/proxy.ready"
PROXY_PORT=$(head -n1 "$DIR/proxy.ready" | sed 's/.*://')

# tf with no personal config, in a 132x50 terminal.
tmux new-session -d -s "$SESSION" -x 132 -y 50 "TERM=xterm tf -f 127.0.0.1 $PROXY_PORT"
wait_screen 'connect <name> <password>'
tmux send-keys -t "$SESSION" 'connect Alice alicepw' Enter
wait_screen 'Last connect was from'
tmux send-keys -t "$SESSION" 'say hello from TinyFugue' Enter
wait_screen 'You say, "hello from TinyFugue"'
tmux send-keys -t "$SESSION" 'prompt' Enter
# Only a confirmed login is restored: wait until holdfast has it.
for _ in $(seq 200); do grep -q 'logged in' "$DIR/proxy.log" && break; sleep 0.05; done

# The game goes away; holdfast holds tf and says so.
kill -9 "$GAME_PID"
wait_screen 'Test MUSH is down'
# ... and comes back on the same port; holdfast logs tf back in.
start_game "$GAME_ADDR"
wait_screen 'You have been logged back in'
tmux send-keys -t "$SESSION" 'say back after the restart' Enter
wait_screen 'You say, "back after the restart"'
tmux send-keys -t "$SESSION" 'prompt' Enter
sleep 0.3 # let tf draw the prompt before the picture is taken

SCREEN=$(screen)
echo "----- TinyFugue screen after the restart -----"
echo "$SCREEN"
echo "----------------------------------------------"

# No telnet leaking into the text: IAC (0xFF, "ÿ" in Latin-1 terminals),
# visible option bytes, zlib noise, or a second connect screen.
if printf '%s' "$SCREEN" | LC_ALL=C grep -q $'[\xff\xfb\xfc\xfd\xfe]'; then
    fail "raw telnet bytes on the screen"
fi
if printf '%s' "$SCREEN" | LC_ALL=C grep -q $'[\x01-\x08\x0e-\x1f]'; then
    fail "control characters on the screen"
fi
[ "$(printf '%s\n' "$SCREEN" | grep -c 'Welcome to FakeMUSH (')" -eq 1 ] || fail "a second connect screen"
[ "$(printf '%s\n' "$SCREEN" | grep -c 'MOTD')" -eq 1 ] || fail "the re-login output leaked"
printf '%s\n' "$SCREEN" | grep -q 'hf-' && fail "the login marker leaked"

# The restarted game got tf's window size, without tf being asked again.
python3 - "$DIR/game.log" <<'EOF' || fail "window size not replayed"
import json, sys
procs, cur = [], None
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e["t"] == "start":
        cur = []; procs.append(cur)
    cur.append(e)
def naws(evs):
    alice = {e["conn"] for e in evs if e["t"] == "login" and e.get("user") == "Alice"}
    return [(e["w"], e["h"]) for e in evs if e["t"] == "naws" and e["conn"] in alice]
first, second = naws(procs[0]), naws(procs[1])
print(f"NAWS from tf to game process 1: {first}; replayed to process 2: {second}")
ttypes = [[e["value"] for e in p if e["t"] == "ttype"] for p in procs]
print(f"TTYPE seen by process 1: {ttypes[0]}; by process 2: {ttypes[1]}")
sys.exit(0 if first and second and second[-1] == first[-1] else 1)
EOF

# Leave; holdfast reports the player's compression at the end.
tmux send-keys -t "$SESSION" 'QUIT' Enter
for _ in $(seq 200); do grep -q 'session closed' "$DIR/proxy.log" && break; sleep 0.05; done
if grep -q 'player compression' "$DIR/proxy.log"; then
    echo "tf took holdfast's MCCP2: $(grep 'player compression' "$DIR/proxy.log" | sed 's/.*player compression/player compression/' | tail -n1)"
else
    echo "tf did not take MCCP2 (plain text to tf)"
fi
echo "backend MCCP2 connections: $(grep -c 'backend compresses' "$DIR/proxy.log" || true)"
grep -q 'corrupt compressed stream' "$DIR/proxy.log" && fail "corrupt stream from the game"
echo "OK"
