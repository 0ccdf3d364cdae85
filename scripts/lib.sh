# shellcheck shell=bash
# What the end-to-end checks against real game servers share
# (scripts/evennia.sh, scripts/realmush.sh): PASS/FAIL reporting, a time
# limit for the whole run, the cleanup of what a run started, free ports,
# waiting on log files, starting holdfast, and two Python helpers written
# into the run directory: a line-mode telnet player and a one-shot session
# straight to the game.
#
# Sourced, not run. The script sets RUN (its run directory) and HF (the
# holdfast binary) before calling start_run; it may define stop_game (run
# by the cleanup) and set LOGS_NOTE and LOG_TAIL.

FAILS=0
T0=$(date +%s.%N)
PIDS=()
PLAYER_FDS=()

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }
pass() { echo "PASS $*"; }
fail() { echo "FAIL $*"; FAILS=$((FAILS + 1)); }
info() { echo "     $*"; }
die() { fail "$*"; exit 1; }

# run_bounded VAR SECONDS COMMAND...: unless VAR is set, runs COMMAND (the
# script again) under timeout(1) in place of this process, with VAR set.
# timeout signals the whole process group; the EXIT trap then cleans up.
run_bounded() {
  local var=$1 secs=$2
  shift 2
  if [ -z "${!var:-}" ]; then
    export "$var=1"
    exec timeout -k 20 "$secs" "$@"
  fi
}

# The script's part of the cleanup (e.g. kill -9 of the game it started):
# after its background processes were signalled, before they are waited
# for. Scripts redefine it.
stop_game() { :; }

cleanup() {
  local rc=$? fd p f
  set +e
  trap - EXIT INT TERM
  for fd in "${PLAYER_FDS[@]}"; do exec {fd}>&-; done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  stop_game
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  if [ "$rc" -ne 0 ] || [ "$FAILS" -ne 0 ]; then
    echo "${LOGS_NOTE:-logs in $RUN}"
    for f in holdfast.log player.log; do
      [ -f "$RUN/$f" ] && { echo "--- $f (tail)"; tail -n "${LOG_TAIL:-30}" "$RUN/$f"; }
    done
  fi
  echo "total $(since "$T0")"
  [ "$rc" -eq 0 ] && [ "$FAILS" -ne 0 ] && rc=1
  exit "$rc"
}

# start_run LIMIT_NAME: the cleanup on exit, a FAIL naming LIMIT_NAME (the
# variable of the time limit) on a signal, and a fresh $RUN.
start_run() {
  trap cleanup EXIT
  # shellcheck disable=SC2064 # the name is meant to be fixed now
  trap "fail \"interrupted or over $1\"; exit 124" INT TERM
  rm -rf "$RUN"
  mkdir -p "$RUN"
}

# free_ports N: N free ports on 127.0.0.1 (bound at once so they differ).
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# wait_for FILE FROM_LINE TIMEOUT_S FIXED_STRING: true once FILE, from line
# FROM_LINE on, contains the string.
wait_for() {
  local file=$1 from=$2 secs=$3 pat=$4 end
  end=$(($(date +%s) + secs))
  while [ "$(date +%s)" -le "$end" ]; do
    if tail -n +"$from" "$file" 2>/dev/null | grep -qF -- "$pat"; then return 0; fi
    sleep 0.1
  done
  return 1
}
count_from() { tail -n +"$2" "$1" | grep -cF -- "$3" || true; }
# The number of the next line FILE will get (for wait_for's FROM_LINE).
lines() { echo $(($(wc -l <"$1") + 1)); }
# The first line from FROM_LINE on containing the string (for reporting).
line_with() { tail -n +"$2" "$1" | grep -F -m1 -- "$3" || true; }

# start_holdfast: `holdfast run` with $RUN/holdfast.toml, its log in
# $RUN/holdfast.log (RUST_LOG, default holdfast=debug); sets HF_ADDR and
# HF_PORT once its ready file names them. The heartbeat's password_env
# goes in the caller's environment for it.
start_holdfast() {
  RUST_LOG=${RUST_LOG:-holdfast=debug} \
    "$HF" run -c "$RUN/holdfast.toml" --ready-file "$RUN/ready" 2>"$RUN/holdfast.log" &
  PIDS+=($!)
  for _ in $(seq 100); do [ -s "$RUN/ready" ] && break; sleep 0.1; done
  [ -s "$RUN/ready" ] || die "holdfast: no ready file"
  HF_ADDR=$(head -n1 "$RUN/ready")
  HF_PORT=${HF_ADDR##*:}
}

# start_player FD NAME: a line-mode player (player.py) through holdfast,
# logging to $RUN/NAME.log and reading the lines to send from file
# descriptor FD (write them with `printf '%s\n' LINE >&FD`). Its pid is
# the last in PIDS.
start_player() {
  local fd=$1 name=$2
  : >"$RUN/$name.log"
  mkfifo "$RUN/$name.in"
  python3 "$RUN/player.py" 127.0.0.1 "$HF_PORT" "$RUN/$name.log" <"$RUN/$name.in" &
  PIDS+=($!)
  eval "exec $fd>\"\$RUN/\$name.in\""
  PLAYER_FDS+=("$fd")
}

# write_helpers FIRST_QUIET FIRST_LIMIT: writes $RUN/player.py and
# $RUN/direct.py. direct.py waits for the game's first output until it has
# been quiet for FIRST_QUIET seconds (at most FIRST_LIMIT).
write_helpers() {
  # A line-mode telnet player: refuses every telnet option, logs what it
  # receives (ANSI escape sequences removed once whole) to LOG and as it
  # came to LOG.raw, sends the lines it reads on stdin, and writes
  # "<<EOF>>" when the server closes the connection.
  cat >"$RUN/player.py" <<'PY'
import os, re, select, socket, sys
host, port, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
ansi = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")
s = socket.create_connection((host, port), timeout=10)
s.setblocking(False)
out = open(log, "ab", buffering=0)
raw = open(log + ".raw", "ab", buffering=0)
state, verb = 0, 0
def telnet(data):
    """Strips telnet; answers DO/WILL with WONT/DONT."""
    global state, verb
    text, reply = bytearray(), bytearray()
    for b in data:
        if state == 0:
            if b == IAC: state = 1
            else: text.append(b)
        elif state == 1:
            if b == IAC: text.append(IAC); state = 0
            elif b in (DO, DONT, WILL, WONT): verb = b; state = 2
            elif b == SB: state = 3
            else: state = 0
        elif state == 2:
            if verb == DO: reply += bytes([IAC, WONT, b])
            elif verb == WILL: reply += bytes([IAC, DONT, b])
            state = 0
        elif state == 3:
            if b == IAC: state = 4
        elif state == 4:
            state = 0 if b == SE else 3
    return bytes(text), bytes(reply)
# stdin is read with os.read, not readline: readline buffers every line a
# read brought, and select() does not see the ones left in that buffer.
stdin_open, pending, pend = True, b"", b""
while True:
    r, _, _ = select.select([s] + ([sys.stdin] if stdin_open else []), [], [], 1.0)
    if s in r:
        try:
            d = s.recv(65536)
        except BlockingIOError:
            d = None
        except OSError:
            d = b""
        if d == b"":
            out.write(b"\n<<EOF>>\n"); break
        if d:
            raw.write(d)
            text, reply = telnet(d)
            if reply:
                s.setblocking(True); s.sendall(reply); s.setblocking(False)
            pend += text
            # strip colours only on whole escape sequences
            cut = pend.rfind(b"\x1b")
            keep = b""
            if cut != -1 and not ansi.match(pend, cut):
                pend, keep = pend[:cut], pend[cut:]
            out.write(ansi.sub(b"", pend).replace(b"\r", b""))
            pend = keep
    if stdin_open and sys.stdin in r:
        chunk = os.read(sys.stdin.fileno(), 65536)
        if not chunk:
            stdin_open = False; continue
        pending += chunk
        *lines, pending = pending.split(b"\n")
        s.setblocking(True)
        for line in lines:
            s.sendall(line + b"\r\n")
        s.setblocking(False)
PY

  # One-shot session straight to the game: sends each argument as a line,
  # waiting for output to settle in between; prints what came back.
  {
    echo "FIRST_QUIET, FIRST_LIMIT = $1, $2"
    cat <<'PY'
import re, socket, sys, time
port = int(sys.argv[1]); cmds = sys.argv[2:]
s = socket.create_connection(("127.0.0.1", port), timeout=10); s.settimeout(0.2)
def drain(quiet, limit):
    buf, last, end = b"", time.time(), time.time() + limit
    while time.time() < end and time.time() - last < quiet:
        try:
            d = s.recv(65536)
            if not d: break
            buf += d; last = time.time()
        except socket.timeout: pass
    return buf
def clean(b):
    b = re.sub(rb"\xff[\xfb-\xfe].|\xff\xfa.*?\xff\xf0|\xff[\xf0-\xf9]", b"", b, flags=re.S)
    return re.sub(rb"\x1b\[[0-9;]*m", b"", b).replace(b"\r", b"").decode("utf-8", "replace")
sys.stdout.write(clean(drain(FIRST_QUIET, FIRST_LIMIT)))
for c in cmds:
    s.sendall(c.encode() + b"\r\n")
    sys.stdout.write(">>> " + c + "\n" + clean(drain(1.0, 8)))
PY
  } >"$RUN/direct.py"
}
