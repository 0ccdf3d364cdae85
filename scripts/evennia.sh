#!/usr/bin/env bash
# End-to-end check of holdfast against a real Evennia (PyPI `evennia`):
# a player logged in through holdfast survives a kill -9 of both Evennia
# processes (Portal and Server) and a restart, and is logged back in.
#
# Steps: venv + `pip install evennia`; `evennia --init`, settings (ports),
# migrate; `evennia start` (superuser from EVENNIA_SUPERUSER_*); accounts
# heartbeat/player/player2 made with `create` on the connect screen;
# holdfast (flavor evennia, heartbeat 1s/2s, client_ip none); two players
# log in through it (plus a wrong password and unknown commands, to record
# Evennia's texts); kill -9 Server and Portal; offline notice, connection
# held; `evennia start`; online notice, no second banner, commands work;
# quit. Prints PASS/FAIL per check and exits non-zero on any failure.
#
# Usage: scripts/evennia.sh
#   EVENNIA_VERSION=5.0.1   pin the PyPI version (default: latest)
#   EVENNIA_TIME_LIMIT=900  seconds for the whole run (default 900)
#
# Everything lives under target/evennia (venv, game dir, and the logs of the
# last run in target/evennia/run) and listens on 127.0.0.1 only, on free
# ports. The venv is reused between runs; the game dir is made fresh each
# time. Slow (one to two minutes, plus the first pip install): not part of
# scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

# Bound the whole run.
run_bounded HF_EVENNIA_INNER "${EVENNIA_TIME_LIMIT:-900}" "$0" "$@"

EV=$ROOT/target/evennia
VENV=$EV/venv
GAME=$EV/game
RUN=$EV/run
HF=$ROOT/target/release/holdfast
HB_USER=heartbeat
HB_PASS=hb-Secret-4711
PL_USER=player
PL_PASS=pl-Secret-0815
P2_USER=player2
P2_PASS=p2-Secret-0816
ADMIN_USER=admin
ADMIN_PASS=ad-Secret-1234

LOGS_NOTE="logs in $RUN (holdfast.log, player.log, evennia logs in $GAME/server/logs)"
LOG_TAIL=40
stop_game() {
  local f
  [ -d "$GAME/server" ] || return 0
  for f in "$GAME/server/server.pid" "$GAME/server/portal.pid"; do
    # Only a process that is ours: its command line names this game dir.
    [ -s "$f" ] && grep -qF "$GAME/server" "/proc/$(cat "$f")/cmdline" 2>/dev/null &&
      kill -9 "$(cat "$f")" 2>/dev/null
  done
}
start_run EVENNIA_TIME_LIMIT

# ---------------------------------------------------------------- helpers

write_helpers 1.0 8

evennia() { (cd "$GAME" && "$VENV/bin/evennia" "$@"); }
# A process that exists and is not a zombie.
running() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [ "${st#Z}" = "$st" ]; }

# `evennia start`, output to LOG.N. On a busy machine the launcher may give
# up waiting for the Portal ("Connection to Evennia timed out. Try again."),
# leaving the Portal up and no Server; as it says, we try again (a second
# `evennia start` finds the Portal and starts the Server).
ev_start() {
  local log=$1 i
  for i in 1 2 3; do
    (cd "$GAME" && env EVENNIA_SUPERUSER_USERNAME="$ADMIN_USER" \
      EVENNIA_SUPERUSER_PASSWORD="$ADMIN_PASS" timeout 180 "$VENV/bin/evennia" start \
      </dev/null >"$log.$i" 2>&1) || true
    grep -qF "Evennia running." "$log.$i" && return 0
    grep -qi "process error" "$log.$i" && { cat "$log.$i"; return 1; }
    echo "     evennia start: $(grep -v '^$' "$log.$i" | tail -n1); again"
  done
  return 1
}

# Until Evennia answers an unknown command on its telnet port.
wait_evennia() {
  local secs=$1 end
  end=$(($(date +%s) + secs))
  while [ "$(date +%s)" -le "$end" ]; do
    if timeout 15 python3 "$RUN/direct.py" "$TELNET_PORT" hf-ready 2>/dev/null |
      grep -qF "Command 'hf-ready' is not available"; then
      return 0
    fi
    sleep 1
  done
  return 1
}

# ---------------------------------------------------------------- 1. setup

t=$(now)
cargo build --release --locked --bin holdfast >"$RUN/cargo.log" 2>&1 ||
  { cat "$RUN/cargo.log"; die "build holdfast"; }
pass "setup: holdfast built ($(since "$t"))"

t=$(now)
if [ ! -x "$VENV/bin/evennia" ]; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    "evennia${EVENNIA_VERSION:+==$EVENNIA_VERSION}" >"$RUN/pip.log" 2>&1 ||
    { tail -n 30 "$RUN/pip.log"; die "setup: pip install evennia"; }
fi
# The launcher runs `twistd` from PATH.
export PATH="$VENV/bin:$PATH"
EV_VERSION=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("evennia"))')
pass "setup: evennia $EV_VERSION in $VENV ($(since "$t"))"

read -r TELNET_PORT AMP_PORT WS_PORT WEB_PORT WEB_INT_PORT <<<"$(free_ports 5)"
t=$(now)
rm -rf "$GAME"
(cd "$EV" && "$VENV/bin/evennia" --init game >"$RUN/init.log" 2>&1) ||
  { tail -n 30 "$RUN/init.log"; die "setup: evennia --init"; }
cat >>"$GAME/server/conf/settings.py" <<EOF

# ---- holdfast scripts/evennia.sh: loopback only, free ports, no web.
TELNET_INTERFACES = ["127.0.0.1"]
TELNET_PORTS = [$TELNET_PORT]
AMP_HOST = "127.0.0.1"
AMP_PORT = $AMP_PORT
WEBSERVER_ENABLED = False
WEBCLIENT_ENABLED = False
WEBSOCKET_CLIENT_ENABLED = False
WEBSOCKET_CLIENT_INTERFACE = "127.0.0.1"
WEBSOCKET_CLIENT_PORT = $WS_PORT
WEBSERVER_INTERFACES = ["127.0.0.1"]
WEBSERVER_PORTS = [($WEB_PORT, $WEB_INT_PORT)]
# Three accounts are made from 127.0.0.1 below (default: 2 per 10 minutes).
CREATION_THROTTLE_LIMIT = 10
EOF
evennia migrate >"$RUN/migrate.log" 2>&1 || { tail -n 30 "$RUN/migrate.log"; die "setup: migrate"; }
pass "setup: game dir $GAME migrated, telnet port $TELNET_PORT, amp port $AMP_PORT ($(since "$t"))"

# ---------------------------------------------------------------- 2. start

t=$(now)
ev_start "$RUN/start1.log" || die "evennia: first start (see $RUN/start1.log.*)"
wait_evennia 180 || die "evennia: first start (telnet port $TELNET_PORT never answered)"
pass "evennia: started (portal pid $(cat "$GAME/server/portal.pid" 2>/dev/null), server pid $(cat "$GAME/server/server.pid" 2>/dev/null)) ($(since "$t"))"

# Accounts, made the way a player would: `create NAME PASSWORD` on the
# connect screen, confirmed with `y`. Straight to Evennia, not via holdfast.
t=$(now)
timeout 90 python3 "$RUN/direct.py" "$TELNET_PORT" \
  "create $HB_USER $HB_PASS" y "create $PL_USER $PL_PASS" y "create $P2_USER $P2_PASS" y \
  "connect $HB_USER $HB_PASS" quit >"$RUN/accounts.log" 2>&1 || true
if grep -qF "A new account '$HB_USER' was created" "$RUN/accounts.log" &&
  grep -qF "A new account '$PL_USER' was created" "$RUN/accounts.log" &&
  grep -qF "A new account '$P2_USER' was created" "$RUN/accounts.log" &&
  grep -qF "You become $HB_USER" "$RUN/accounts.log"; then
  pass "evennia: accounts '$HB_USER', '$PL_USER', '$P2_USER' created, '$HB_USER' logs in ($(since "$t"))"
else
  cat "$RUN/accounts.log"
  die "evennia: creating accounts"
fi

# ---------------------------------------------------------------- 3. holdfast

cat >"$RUN/holdfast.toml" <<EOF
game = "Evennia test game"
flavor = "evennia"

[listen]
addrs = ["127.0.0.1:0"]
login_timeout = "10m"

[[backends]]
name = "evennia"
addr = "127.0.0.1:$TELNET_PORT"

[heartbeat]
user = "$HB_USER"
password_env = "HF_EVENNIA_HB_PASS"
interval = "1s"
timeout = "2s"

[failover]
after = "off"

[client_ip]
mode = "none"
EOF
HF_EVENNIA_HB_PASS=$HB_PASS "$HF" check -c "$RUN/holdfast.toml" >"$RUN/check.log" 2>&1 || { cat "$RUN/check.log"; die "holdfast: check"; }
t=$(now)
HF_EVENNIA_HB_PASS=$HB_PASS start_holdfast
wait_for "$RUN/holdfast.log" 1 20 "backend up" || die "holdfast: heartbeat never saw Evennia up"
pass "holdfast: listening on $HF_ADDR, heartbeat '$HB_USER' up ($(since "$t"))"

# ---------------------------------------------------------------- 4. player

PL=$RUN/player.log
start_player 4 player
PLAYER_PID=${PIDS[-1]}
send() { printf '%s\n' "$1" >&4; }
player_alive() { kill -0 "$PLAYER_PID" 2>/dev/null && ! grep -qF "<<EOF>>" "$PL"; }

t=$(now)
wait_for "$PL" 1 30 "connect <username> <password>" ||
  die "player: no Evennia connect screen through holdfast"
pass "player: connect screen through holdfast ($(since "$t"))"

m=$(lines "$PL")
send "hf-before-login"
if wait_for "$PL" "$m" 10 "Command 'hf-before-login' is not available"; then
  pass "evennia: unknown command before login: $(line_with "$PL" "$m" "hf-before-login")"
else
  fail "evennia: no 'Command ... is not available' for an unknown command before login"
fi

m=$(lines "$PL")
h=$(lines "$RUN/holdfast.log")
send "connect $PL_USER wrong-Password-1"
if wait_for "$PL" "$m" 10 "Username and/or password is incorrect."; then
  pass "evennia: failed login: $(line_with "$PL" "$m" "incorrect")"
else
  fail "evennia: no failure text for a wrong password"
fi
if wait_for "$RUN/holdfast.log" "$h" 10 "login not confirmed"; then
  why=$(line_with "$RUN/holdfast.log" "$h" "login not confirmed" | grep -o 'why=[^ ]*.*' || true)
  pass "holdfast: failed login not counted ($why)"
else
  fail "holdfast: did not decide on the failed login"
fi
if [ "$(count_from "$RUN/holdfast.log" "$h" "logged in")" -ne 0 ]; then
  fail "holdfast: counted a failed login as logged in"
fi
if [ "$(count_from "$PL" "$m" "is not available")" -ne 0 ]; then
  fail "player: saw holdfast's marker after the failed login"
fi

m=$(lines "$PL")
h=$(lines "$RUN/holdfast.log")
t=$(now)
send "connect $PL_USER $PL_PASS"
if wait_for "$PL" "$m" 15 "You become $PL_USER"; then
  pass "evennia: login: $(line_with "$PL" "$m" "You become") ($(since "$t"))"
else
  die "player: no 'You become $PL_USER' after connect"
fi
wait_for "$RUN/holdfast.log" "$h" 15 "logged in" || die "holdfast: did not confirm the login"
pass "holdfast: login of '$PL_USER' confirmed ($(since "$t"))"

sleep 1
m=$(lines "$PL")
send "hf-after-login"
if wait_for "$PL" "$m" 10 "Command 'hf-after-login' is not available"; then
  pass "evennia: unknown command after login: $(line_with "$PL" "$m" "hf-after-login")"
else
  fail "evennia: no 'Command ... is not available' after login"
fi
if [ "$(count_from "$PL" 1 "Command 'hf-" | tr -d ' ')" -ne 2 ]; then
  fail "player: saw holdfast's marker echo (lines with Command 'hf-: $(count_from "$PL" 1 "Command 'hf-"))"
fi

m=$(lines "$PL")
send "say before the crash"
wait_for "$PL" "$m" 10 'You say, "before the crash"' && pass "player: say works before the crash" ||
  fail "player: say before the crash"

m=$(lines "$PL")
send "who"
wait_for "$PL" "$m" 10 "$HB_USER" && pass "evennia: who lists '$HB_USER' (the heartbeat is logged in)" ||
  fail "evennia: who does not list '$HB_USER'"
sleep 1

# A second player, so that two re-logins reach Evennia's Portal within its
# 1/MAX_CONNECTION_RATE window after the restart.
P2=$RUN/player2.log
start_player 5 player2
PLAYER2_PID=${PIDS[-1]}
send2() { printf '%s\n' "$1" >&5; }
player2_alive() { kill -0 "$PLAYER2_PID" 2>/dev/null && ! grep -qF "<<EOF>>" "$P2"; }
wait_for "$P2" 1 30 "connect <username> <password>" || die "player2: no connect screen"
send2 "connect $P2_USER $P2_PASS"
wait_for "$P2" 1 15 "You become $P2_USER" && pass "player2: logged in through holdfast" ||
  die "player2: login"
sleep 1

# ---------------------------------------------------------------- 5. kill -9

SPID=$(cat "$GAME/server/server.pid")
PPID_=$(cat "$GAME/server/portal.pid")
m=$(lines "$PL")
m2=$(lines "$P2")
h=$(lines "$RUN/holdfast.log")
t=$(now)
kill -9 "$SPID" "$PPID_"
for _ in $(seq 50); do
  running "$SPID" || running "$PPID_" || break
  sleep 0.1
done
if running "$SPID" || running "$PPID_"; then
  die "evennia: processes survived kill -9"
fi
pass "evennia: kill -9 server $SPID and portal $PPID_"
if wait_for "$PL" "$m" 20 "is down. Your connection is being held"; then
  pass "player: offline notice $(since "$t") after kill -9: $(line_with "$PL" "$m" "is down")"
else
  fail "player: no offline notice"
fi
wait_for "$P2" "$m2" 20 "is down. Your connection is being held" && pass "player2: offline notice" ||
  fail "player2: no offline notice"
wait_for "$RUN/holdfast.log" "$h" 10 "backend down" && pass "holdfast: backend marked down" ||
  fail "holdfast: backend not marked down"
sleep 3
player_alive && pass "player: connection still open 3s after the offline notice" ||
  die "player: connection closed after kill -9"
player2_alive || die "player2: connection closed after kill -9"
m=$(lines "$PL")
send "look"
wait_for "$PL" "$m" 5 "that was not sent" && pass "player: input while held answered by holdfast: $(line_with "$PL" "$m" "not sent")" ||
  fail "player: no held-input notice"

# ---------------------------------------------------------------- 6. restart

m=$(lines "$PL")
m2=$(lines "$P2")
h=$(lines "$RUN/holdfast.log")
t=$(now)
ev_start "$RUN/start2.log" &
START_PID=$!
PIDS+=($START_PID)
if wait_for "$RUN/holdfast.log" "$h" 180 "backend up"; then
  pass "holdfast: heartbeat sees Evennia up $(since "$t") after evennia start"
else
  fail "holdfast: heartbeat never saw Evennia back"
fi
if wait_for "$PL" "$m" 120 "You have been logged back in."; then
  pass "player: online notice $(since "$t") after evennia start: $(line_with "$PL" "$m" "logged back in")"
else
  fail "player: no online notice (re-login)"
fi
if wait_for "$P2" "$m2" 60 "You have been logged back in."; then
  pass "player2: online notice $(since "$t") after evennia start"
else
  fail "player2: no online notice (re-login)"
fi
wait "$START_PID" 2>/dev/null && info "evennia start (2nd) returned $(since "$t") after it began" ||
  fail "evennia start (2nd) failed (see $RUN/start2.log.*)"
player_alive && pass "player: connection open after the restart" || die "player: connection closed"
player2_alive || die "player2: connection closed"

n_banner=$(count_from "$PL" "$m" "Welcome to")
n_become=$(count_from "$PL" "$m" "You become")
n_marker=$(count_from "$PL" "$m" "is not available")
n_dos=$(count_from "$PL" "$m" "DoS protection")
if [ "$n_banner" -eq 0 ] && [ "$n_become" -eq 0 ] && [ "$n_marker" -eq 0 ] && [ "$n_dos" -eq 0 ]; then
  pass "player: no second connect screen, login text or marker echo after the restart"
else
  fail "player: saw re-login chatter (banner $n_banner, 'You become' $n_become, marker $n_marker, DoS $n_dos)"
fi
n2=$(($(count_from "$P2" "$m2" "Welcome to") + $(count_from "$P2" "$m2" "You become") +
  $(count_from "$P2" "$m2" "is not available") + $(count_from "$P2" "$m2" "DoS protection")))
[ "$n2" -eq 0 ] && pass "player2: no re-login chatter either" ||
  fail "player2: saw re-login chatter: $(tail -n +"$m2" "$P2" | tr '\n' '|' | cut -c1-300)"
n_sync=$(count_from "$RUN/holdfast.log" "$h" "re-login: marker not back yet")
info "holdfast: re-login markers sent again while Evennia's Portal held a connection back: $n_sync"

m=$(lines "$PL")
m2=$(lines "$P2")
send "say after the restart"
wait_for "$PL" "$m" 10 'You say, "after the restart"' && pass "player: say works after the restart" ||
  fail "player: say after the restart"
wait_for "$P2" "$m2" 10 "$PL_USER says, \"after the restart\"" &&
  pass "player2: hears it: $(line_with "$P2" "$m2" "after the restart")" ||
  fail "player2: did not hear player"
m=$(lines "$PL")
send "who"
if wait_for "$PL" "$m" 10 "$PL_USER " && wait_for "$PL" "$m" 10 "$P2_USER" &&
  wait_for "$PL" "$m" 10 "$HB_USER"; then
  pass "evennia: who lists '$PL_USER', '$P2_USER' and '$HB_USER' again"
else
  fail "evennia: who after the restart: $(tail -n +"$m" "$PL" | tr '\n' ' ' | cut -c1-300)"
fi

# ---------------------------------------------------------------- 7. quit

m=$(lines "$PL")
h=$(lines "$RUN/holdfast.log")
t=$(now)
send "quit"
if wait_for "$PL" "$m" 10 "<<EOF>>"; then
  pass "player: quit closes the connection ($(since "$t")): $(tail -n +"$m" "$PL" | grep -v '^$' | grep -v '<<EOF>>' | tr '\n' '|')"
else
  fail "player: connection still open after quit"
fi
wait_for "$RUN/holdfast.log" "$h" 10 "session closed" &&
  info "holdfast: $(line_with "$RUN/holdfast.log" "$h" "session closed" | sed 's/.*session closed/session closed/')"

if [ "$FAILS" -eq 0 ]; then
  echo "RESULT: PASS"
else
  echo "RESULT: FAIL ($FAILS failed checks)"
fi
