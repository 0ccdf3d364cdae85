#!/usr/bin/env bash
# End-to-end check of holdfast against a real TinyMUX or TinyMUSH built from
# its public source: a player logged in through holdfast survives a kill -9
# of the game and a restart, is held meanwhile, and is logged back in
# without a second banner. Called by scripts/tinymux.sh and
# scripts/tinymush.sh; not part of scripts/test.sh (slow, needs a compiler,
# the server's build dependencies and, for a git URL, the network).
#
# Usage: scripts/realmush.sh tinymux|tinymush [SOURCE]
#   SOURCE  a checkout of the server's repository, or a git URL to clone
#           (default: the public repository). Built once under
#           target/<server>/; REBUILD=1 builds again.
#   REALMUSH_TIME_LIMIT=1800  seconds for the whole run
#   REALMUSH_CROWD=N  afterwards, N players more (scripts/realmush_crowd.py):
#           three at the connect screen at once, then N logged in, kill -9,
#           restart; prints what the game's per-address limits did to them
#   REALMUSH_GAME_CONF  lines added to the game's config file
#   REALMUSH_HF_CONF    sections added to holdfast's config
#   LIBS=-lsqlite3  (TinyMUX) passed on to its configure: for a source tree
#           whose mux/sqlite/sqlite3.c amalgamation is a stub
#
# Build dependencies: TinyMUX 2.14 needs a C++17 compiler, OpenSSL and
# PCRE2 headers (Debian: build-essential libssl-dev libpcre2-dev
# pkg-config); TinyMUSH 4.0 needs CMake and liblmdb, libgdbm, libpcre2,
# libcrypt headers (Debian: cmake liblmdb-dev libgdbm-dev libpcre2-dev
# libcrypt-dev). Everything listens on 127.0.0.1, on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

SERVER=${1:-}
case "$SERVER" in
tinymux) DEFAULT_SRC=https://github.com/brazilofmux/tinymux.git ;;
tinymush) DEFAULT_SRC=https://github.com/TinyMUSH/TinyMUSH.git ;;
*)
  echo "usage: $0 tinymux|tinymush [SOURCE-DIR-OR-GIT-URL]" >&2
  exit 2
  ;;
esac
SRC_ARG=${2:-$DEFAULT_SRC}
case "$SRC_ARG" in
*://* | git@*) ;;
*) [ -d "$SRC_ARG" ] || { echo "$0: $SRC_ARG is neither a directory nor a git URL" >&2; exit 2; } ;;
esac

run_bounded HF_REALMUSH_INNER "${REALMUSH_TIME_LIMIT:-1800}" "$0" "$@"

W=$ROOT/target/$SERVER
SRC=$W/src
RUN=$W/run
HF=$ROOT/target/release/holdfast
HB_PASS=Hb-Secret-4711
PL_PASS=Pl-Secret-0815

GAME_PID=
# Only the game this script started (its pid file, its binary).
stop_game() { [ -z "$GAME_PID" ] || kill -9 "$GAME_PID" 2>/dev/null; }
start_run REALMUSH_TIME_LIMIT
write_helpers 3.0 10

# Until the game shows a connect screen on PORT.
wait_game() {
  local end=$(($(date +%s) + $1))
  while [ "$(date +%s)" -le "$end" ]; do
    [ -n "$(timeout 15 python3 "$RUN/direct.py" "$PORT" 2>/dev/null)" ] && return 0
    sleep 1
  done
  return 1
}

# ---------------------------------------------------------------- 1. build

t=$(now)
nice -n "${REALMUSH_NICE:-10}" cargo build --release --locked --bin holdfast >"$RUN/cargo.log" 2>&1 ||
  { tail -n 30 "$RUN/cargo.log"; die "build holdfast"; }
pass "setup: holdfast built ($(since "$t"))"

if [ -n "${REBUILD:-}" ] || [ ! -f "$W/built" ]; then
  t=$(now)
  rm -rf "$SRC" "$W/built"
  mkdir -p "$W"
  if [ -d "$SRC_ARG" ]; then
    cp -a "$SRC_ARG" "$SRC"
  else
    git clone --depth 1 "$SRC_ARG" "$SRC" >"$RUN/clone.log" 2>&1 ||
      { cat "$RUN/clone.log"; die "clone $SRC_ARG (no network? pass a source dir)"; }
  fi
  case "$SERVER" in
  tinymux)
    # The SQLite amalgamation is not in every copy of the repository (a
    # mirror may lack the 9 MB file); any 3.4x amalgamation whose
    # sqlite3.h matches mux/sqlite/sqlite3.h builds.
    [ -s "$SRC/mux/sqlite/sqlite3.c" ] ||
      die "build TinyMUX: $SRC_ARG has no mux/sqlite/sqlite3.c; put SQLite's amalgamation there (sqlite.org's, or deps/sqlite3/sqlite3.c of npm's better-sqlite3 11.9, SQLite 3.49.1)"
    # A git checkout stamps every file with the checkout's time in no
    # particular order, and make would then run automake again (the
    # version configure was made with, rarely installed): the generated
    # files are made newer than their sources, as in a release tarball.
    (cd "$SRC/mux" &&
      find . -exec touch -h -d '2025-01-01 00:00:00' {} + &&
      touch -d '2025-01-01 00:00:01' aclocal.m4 &&
      touch -d '2025-01-01 00:00:02' configure $(find . -name Makefile.in -o -name '*.h.in'))
    (cd "$SRC/mux" && ./configure && make -j"$(nproc)" && make install) >"$RUN/build.log" 2>&1 ||
      { tail -n 40 "$RUN/build.log"; die "build TinyMUX"; }
    ;;
  tinymush)
    (mkdir -p "$SRC/build" && cd "$SRC/build" &&
      cmake -DTINYMUSH_USE_CCACHE=OFF -DTINYMUSH_USE_LTO=OFF .. &&
      cmake --build . --target install-fresh -j"$(nproc)") >"$RUN/build.log" 2>&1 ||
      { tail -n 40 "$RUN/build.log"; die "build TinyMUSH"; }
    ;;
  esac
  touch "$W/built"
  pass "setup: $SERVER built from $SRC_ARG ($(since "$t"))"
fi

# ---------------------------------------------------------------- 2. game

PORT=$(free_ports 1)
case "$SERVER" in
tinymux)
  GAME=$SRC/mux/game
  # The flatfile (netmux.db) and the SQLite database it becomes
  # (netmux.sqlite, sqlite_backend.cpp:137): a minimal database each run.
  rm -f "$GAME"/data/netmux.db* "$GAME"/data/netmux.sqlite* "$GAME"/netmux.pid
  CONF=$GAME/netmux.conf
  START="cd '$GAME' && ./Startmux"
  gamelog() { ls -t "$GAME"/*.log 2>/dev/null | head -n1; }
  pidfile() { echo "$GAME/netmux.pid"; }
  GOD="connect wizard potrzebie"
  ;;
tinymush)
  GAME=$SRC/game
  CONF=$GAME/configs/netmush.conf
  # A clean database each run, as for TinyMUX above.
  rm -rf "$GAME"/db/* "$GAME"/netmush.pid
  # netmush forks into the background; it exits non-zero when it cannot
  # load its database.
  START="cd '$GAME' && ./netmush >/dev/null 2>&1"
  gamelog() { echo "$GAME/logs/netmush.log"; }
  pidfile() { find "$GAME" -maxdepth 2 -name '*.pid' | head -n1; }
  GOD="connect #1 potrzebie"
  ;;
esac
# The game's config as shipped, with this run's port and any
# REALMUSH_GAME_CONF lines (e.g. TinyMUX's "max_lastsite_cnt 0") at the end.
[ -f "$CONF.orig" ] || cp "$CONF" "$CONF.orig"
{
  grep -v '^port[[:space:]]' "$CONF.orig"
  echo "port $PORT"
  if [ -n "${REALMUSH_GAME_CONF:-}" ]; then printf '%s\n' "$REALMUSH_GAME_CONF"; fi
} >"$CONF"
start_game() { sh -c "$START"; }

game_failed() {
  local log
  log=$(gamelog)
  [ -n "$log" ] && { echo "--- $log (tail)"; tail -n 15 "$log"; }
  die "$*"
}

t=$(now)
start_game || game_failed "$SERVER: did not start"
wait_game 120 || game_failed "$SERVER: no connect screen on port $PORT"
GAME_PID=$(cat "$(pidfile)")
pass "$SERVER: started, pid $GAME_PID, port $PORT ($(since "$t"))"

timeout 60 python3 "$RUN/direct.py" "$PORT" "$GOD" \
  "@pcreate heartbeat=$HB_PASS" "@pcreate player=$PL_PASS" @dump QUIT >"$RUN/accounts.log" 2>&1 || true
grep -qi "new player\|created" "$RUN/accounts.log" ||
  { cat "$RUN/accounts.log"; die "$SERVER: @pcreate as God"; }
pass "$SERVER: players heartbeat and player created"

# ---------------------------------------------------------------- 3. holdfast

cat >"$RUN/holdfast.toml" <<EOF
game = "Real $SERVER"
flavor = "$SERVER"

[listen]
addrs = ["127.0.0.1:0"]
# Every test player comes from 127.0.0.1 (REALMUSH_CROWD: many at once).
max_per_ip = 1000

[[backends]]
name = "$SERVER"
addr = "127.0.0.1:$PORT"

[heartbeat]
user = "heartbeat"
password_env = "HF_REALMUSH_HB_PASS"

[failover]
after = "off"
EOF
# REALMUSH_HF_CONF: more holdfast config (whole sections, e.g. "[resume]").
if [ -n "${REALMUSH_HF_CONF:-}" ]; then printf '\n%s\n' "$REALMUSH_HF_CONF" >>"$RUN/holdfast.toml"; fi
HF_REALMUSH_HB_PASS=$HB_PASS "$HF" check -c "$RUN/holdfast.toml" >"$RUN/check.log" 2>&1 || { cat "$RUN/check.log"; die "holdfast check"; }
grep -q "holdfast's address" "$RUN/check.log" && pass "check: says the game sees holdfast's address"
HF_REALMUSH_HB_PASS=$HB_PASS start_holdfast
wait_for "$RUN/holdfast.log" 1 30 "backend up" || die "holdfast: heartbeat never saw $SERVER up"
pass "holdfast: heartbeat up"

# ---------------------------------------------------------------- 4. player

PL=$RUN/player.log
start_player 4 player
send() { printf '%s\n' "$1" >&4; }

wait_for "$PL" 1 30 "connect" || die "player: no connect screen through holdfast"
BANNER_LINE=$(grep -m1 -i "connect" "$PL")
send "connect player $PL_PASS"
send "think hf-check-1"
if ! wait_for "$PL" 1 30 "hf-check-1"; then
  # The login and the think go out in one write. With lazy_connect and
  # resume.keep on, holdfast has sent such a second line to the game before
  # the login: the game shows its connect screen again and the line is lost.
  [ "$(count_from "$PL" 1 "$BANNER_LINE")" -gt 1 ] &&
    echo "note: the connect screen came twice: 'think hf-check-1' reached the game before the login (docs/games.md, TinyMUX: lazy_connect with resume.keep)"
  die "player: login through holdfast (no answer to the think sent with the login)"
fi
pass "player: logged in through holdfast"

# ---------------------------------------------------------------- 5. kill -9

m=$(lines "$PL")
t=$(now)
kill -9 "$GAME_PID"
wait "$GAME_PID" 2>/dev/null || true
GAME_PID=
if wait_for "$PL" "$m" 30 "is down"; then
  pass "held: offline notice after $(since "$t")"
else
  fail "held: no offline notice"
fi
sleep 2
grep -qF "<<EOF>>" "$PL" && die "held: the player's connection was closed"

t=$(now)
start_game || game_failed "$SERVER: did not start again after kill -9"
wait_game 120 || game_failed "$SERVER: no connect screen after the restart"
GAME_PID=$(cat "$(pidfile)")
pass "$SERVER: restarted, pid $GAME_PID ($(since "$t"))"
# Not "logged back in": the offline notice says "you will be logged back in".
if wait_for "$PL" "$m" 60 "You have been logged back in"; then
  pass "restored: online notice $(since "$t") after the restart"
else
  fail "restored: no online notice"
fi
# From holdfast's log: when it saw the game back, when the player was in.
hf_time() { grep -F "$1" "$RUN/holdfast.log" | tail -n1 | cut -d' ' -f1; }
UP=$(hf_time "backend up")
BACK=$(hf_time "logged back in")
if [ -n "$UP" ] && [ -n "$BACK" ]; then
  awk -v s="$t" -v u="$(date -d "$UP" +%s.%N)" -v b="$(date -d "$BACK" +%s.%N)" 'BEGIN {
    printf "times: restart command -> holdfast saw the game up %.2fs -> player logged back in %.2fs later (%.2fs in all)\n", u - s, b - u, b - s }'
fi
n=$(count_from "$PL" "$m" "$BANNER_LINE")
[ "$n" -eq 0 ] && pass "restored: no second connect screen" || fail "restored: connect screen shown again ($n)"

m=$(lines "$PL")
send "think hf-check-2"
wait_for "$PL" "$m" 20 "hf-check-2" && pass "restored: commands work" || fail "restored: no answer to think"

# Lower case `quit` once logged in quits on both servers.
send "quit"
wait_for "$PL" "$m" 20 "<<EOF>>" && pass "quit: player closed" || fail "quit: not closed"
grep -q "reason=\"quit\"" "$RUN/holdfast.log" && pass "quit: holdfast saw a quit, not a crash" ||
  fail "quit: holdfast did not log a quit"

# ---------------------------------------------------------------- 6. crowd

if [ -n "${REALMUSH_CROWD:-}" ]; then
  t=$(now)
  m=$(lines "$RUN/holdfast.log")
  python3 "$ROOT/scripts/realmush_crowd.py" --hf-port "$HF_PORT" --game-port "$PORT" \
    --god "$GOD" --players "$REALMUSH_CROWD" --pidfile "$(pidfile)" \
    --start "$START" \
    --watch "${REALMUSH_CROWD_WATCH:-180}" | tee "$RUN/crowd.log"
  crowd_rc=${PIPESTATUS[0]}
  GAME_PID=$(cat "$(pidfile)" 2>/dev/null || true)
  echo "crowd: holdfast's log lines since, by count:"
  tail -n +"$m" "$RUN/holdfast.log" | sed -E -n 's/^[^ ]+ +([A-Z]+) .*holdfast::([a-z_:]+): (.*)$/\1 \2: \3/p' |
    sed -E 's/ [a-z_]+=.*$//' | sort | uniq -c | sort -rn | head -n 25
  [ "$crowd_rc" -eq 0 ] && pass "crowd: done ($(since "$t"))" || fail "crowd: the run could not be carried out"
fi

