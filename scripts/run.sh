#!/usr/bin/env bash
# The quick start: builds holdfast and runs it on the sample config.toml.
# When nothing listens on the sample's game address (127.0.0.1:4202), it
# also starts the bundled demo game there, and prints what to type.
#
#   scripts/run.sh [CONFIG]       build, then run holdfast on CONFIG (default config.toml)
#   scripts/run.sh crash          kill -9 the demo game: players stay connected, held
#   scripts/run.sh restart-game   start the demo game again: players are logged back in
#
# Ctrl-C stops holdfast and the demo game. With a real game on the backend
# address, or with another CONFIG, it runs holdfast only.
#
# Environment:
#   HOLDFAST_HEARTBEAT_PASSWORD  the heartbeat player's password (config.toml reads it);
#                                for the demo game, made up when unset
#   HOLDFAST_BIN_DIR   take holdfast and fakemush from this directory, build nothing
#                      (tests use target/debug)
#   HOLDFAST_DEMO      1: start the demo game for another CONFIG too; 0: never
#   HOLDFAST_DEMO_DIR  where the demo keeps its pid and ready files (default target/demo)
set -euo pipefail
cd "$(dirname "$0")/.."
demo_dir=${HOLDFAST_DEMO_DIR:-target/demo}

# How to run this script again, as the user should type it.
self_cmd="scripts/run.sh"
[ -z "${HOLDFAST_DEMO_DIR:-}" ] || self_cmd="HOLDFAST_DEMO_DIR=$demo_dir $self_cmd"

# Prints the pid in FILE if that process is still alive and is COMMAND.
live_pid() {
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 1
  echo "$pid"
}

case "${1:-}" in
  crash)
    if ! pid=$(live_pid "$demo_dir/game.pid" fakemush); then
      echo "no demo game is running (scripts/run.sh starts it)" >&2
      exit 1
    fi
    kill -KILL "$pid"
    echo "demo game killed with SIGKILL. Players stay connected and are told the game is down."
    echo "Bring it back with: $self_cmd restart-game"
    exit 0
    ;;
  restart-game)
    if ! pid=$(live_pid "$demo_dir/run.pid" run.sh) && ! pid=$(live_pid "$demo_dir/run.pid" bash); then
      echo "scripts/run.sh is not running with a demo game" >&2
      exit 1
    fi
    kill -USR1 "$pid"
    echo "demo game restarting; held players are logged back in within a few seconds."
    exit 0
    ;;
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
esac

config=${1:-config.toml}
[ -f "$config" ] || { echo "no such config file: $config" >&2; exit 1; }

if [ -n "${HOLDFAST_BIN_DIR:-}" ]; then
  bin=$HOLDFAST_BIN_DIR
else
  # Release build: a few minutes the first time, seconds afterwards.
  echo "building holdfast and the demo game (release; the first build takes a few minutes)..." >&2
  cargo build --release --locked --bin holdfast --bin fakemush
  bin=target/release
fi

# The first backend's address, as written in the config.
backend=$(awk '/^\[\[backends\]\]/ { b = 1; next }
  b && /^[[:space:]]*addr[[:space:]]*=/ { if (match($0, /"[^"]*"/)) print substr($0, RSTART + 1, RLENGTH - 2); exit }' "$config")

# The demo runs in place of a game only for the sample config (or when asked),
# only on a loopback address, and only if nothing answers there.
demo=0
case "${HOLDFAST_DEMO:-auto}" in
  1) demo=1 ;;
  0) demo=0 ;;
  *) [ "$(realpath "$config")" = "$(realpath config.toml)" ] && demo=1 ;;
esac
if [ "$demo" = 1 ]; then
  case "$backend" in
    127.0.0.1:* | localhost:*) ;;
    *) demo=0 ;;
  esac
fi
if [ "$demo" = 1 ] && (exec 3<>"/dev/tcp/${backend%:*}/${backend##*:}") 2>/dev/null; then
  echo "a game already listens on $backend: running holdfast in front of it (no demo game)" >&2
  demo=0
fi

mkdir -p "$demo_dir"
game_pid=""
hf_pid=""

start_game() {
  rm -f "$demo_dir/game.ready"
  "$bin/fakemush" --demo --listen "$backend" --ready-file "$demo_dir/game.ready" \
    --user "heartbeat:$HOLDFAST_HEARTBEAT_PASSWORD" \
    --user Alice:alicepw --user Bob:bobpw --user Wiz:wizpw:wizard \
    >>"$demo_dir/game.log" 2>&1 &
  game_pid=$!
  # Not a job of this shell: `crash` kills it from outside, and bash would
  # print a "Killed" line for it. Bash still reaps it.
  disown "$game_pid"
  echo "$game_pid" >"$demo_dir/game.pid"
  for _ in $(seq 300); do
    [ -s "$demo_dir/game.ready" ] && return 0
    kill -0 "$game_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "the demo game did not start; see $demo_dir/game.log" >&2
  return 1
}

stop_game() {
  if [ -n "$game_pid" ] && kill -0 "$game_pid" 2>/dev/null; then
    kill -TERM "$game_pid" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$game_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$game_pid" 2>/dev/null && kill -KILL "$game_pid" 2>/dev/null || true
  fi
  game_pid=""
}

cleanup() {
  trap - INT TERM USR1
  if [ -n "$hf_pid" ] && kill -0 "$hf_pid" 2>/dev/null; then
    kill -TERM "$hf_pid" 2>/dev/null || true
    # holdfast says goodbye to every player within its shutdown grace.
    for _ in $(seq 150); do
      kill -0 "$hf_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$hf_pid" 2>/dev/null || true
    wait "$hf_pid" 2>/dev/null || true
  fi
  stop_game
  rm -f "$demo_dir/run.pid" "$demo_dir/game.pid" "$demo_dir/game.ready" "$demo_dir/proxy.ready"
}

restart=0
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap 'restart=1' USR1

if [ "$demo" = 1 ]; then
  if [ -z "${HOLDFAST_HEARTBEAT_PASSWORD:-}" ]; then
    HOLDFAST_HEARTBEAT_PASSWORD="demo-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
  fi
  export HOLDFAST_HEARTBEAT_PASSWORD
  echo $$ >"$demo_dir/run.pid"
  : >"$demo_dir/game.log"
  start_game || { cleanup; exit 1; }
fi

rm -f "$demo_dir/proxy.ready"
"$bin/holdfast" run -c "$config" --ready-file "$demo_dir/proxy.ready" &
hf_pid=$!
for _ in $(seq 300); do
  [ -s "$demo_dir/proxy.ready" ] && break
  kill -0 "$hf_pid" 2>/dev/null || break
  sleep 0.1
done

if [ -s "$demo_dir/proxy.ready" ]; then
  listen=$(head -n1 "$demo_dir/proxy.ready")
  port=${listen##*:}
  case "$listen" in
    0.0.0.0:* | 127.*) host=127.0.0.1 ;;
    "[::]:"*) host=::1 ;;
    *) host=${listen%:*}; host=${host#[}; host=${host%]} ;;
  esac
  {
    echo
    echo "-----------------------------------------------------------------------"
    if [ "$demo" = 1 ]; then
      echo "holdfast listens on $listen, in front of the demo game on $backend."
      echo
      echo "  Connect:         telnet $host $port      (or: nc $host $port)"
      echo "  Log in:          connect Alice alicepw"
      echo "  Crash the game:  $self_cmd crash          (another terminal; you stay connected)"
      echo "  Restart it:      $self_cmd restart-game   (you are logged back in)"
      echo "  Stop everything: Ctrl-C here"
    else
      echo "holdfast listens on $listen, in front of $backend."
      echo
      echo "  Connect:         telnet $host $port      (or: nc $host $port)"
      echo "  Stop:            Ctrl-C here"
    fi
    echo "-----------------------------------------------------------------------"
    echo
  }
fi

# Wait for holdfast; a USR1 (restart-game) interrupts the wait.
rc=0
while :; do
  if wait "$hf_pid"; then rc=0; else rc=$?; fi
  if [ "$restart" = 1 ]; then
    restart=0
    if [ "$demo" = 1 ]; then
      stop_game
      start_game || true
    fi
    continue
  fi
  kill -0 "$hf_pid" 2>/dev/null || break
done
hf_pid=""
cleanup
exit "$rc"
