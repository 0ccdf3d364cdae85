#!/usr/bin/env python3
"""Many players behind holdfast in front of a real game: what the game's
per-address limits do to them (TinyMUX's `max_preauth_sitecons` and
`max_lastsite_cnt`; every player behind holdfast has holdfast's address).

Run by scripts/realmush.sh when REALMUSH_CROWD=N is set, after its own
check; prints what the players saw and when. It measures and reports; it
asserts nothing about holdfast (the exit status only says whether the run
itself could be carried out).

1. `preauth`: three players open holdfast's port at once and sit at the
   connect screen (the heartbeat is logged in, so it does not count).
2. `setup`: as God, lifts both limits live (`@admin ...=0`) and creates N
   players, which then log in through holdfast one after the other.
3. `restart`: kill -9 of the game, start again (its limits are back to
   netmux.conf's), and every held player is logged back in by holdfast at
   once; records per player what it saw and when.
"""
import argparse
import os
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import time

IAC, DONT, DO, WONT, WILL, SB, SE = 255, 254, 253, 252, 251, 250, 240
T0 = time.time()


def ts():
    return time.time() - T0


class Player:
    """A line-mode client that refuses every telnet option."""

    def __init__(self, name, port):
        self.name = name
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.s.setblocking(False)
        self.state, self.verb = 0, 0
        self.partial = b""
        self.lines = []  # (time, text)
        self.closed_at = None

    def fileno(self):
        return self.s.fileno()

    def _telnet(self, data):
        text, reply = bytearray(), bytearray()
        for b in data:
            if self.state == 0:
                if b == IAC:
                    self.state = 1
                else:
                    text.append(b)
            elif self.state == 1:
                if b == IAC:
                    text.append(IAC)
                    self.state = 0
                elif b in (DO, DONT, WILL, WONT):
                    self.verb, self.state = b, 2
                elif b == SB:
                    self.state = 3
                else:
                    self.state = 0
            elif self.state == 2:
                if self.verb == DO:
                    reply += bytes([IAC, WONT, b])
                elif self.verb == WILL:
                    reply += bytes([IAC, DONT, b])
                self.state = 0
            elif self.state == 3:
                if b == IAC:
                    self.state = 4
            elif self.state == 4:
                self.state = 0 if b == SE else 3
        return bytes(text), bytes(reply)

    def readable(self):
        try:
            d = self.s.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            d = b""
        if not d:
            self.closed_at = ts()
            if self.partial:
                self.lines.append((ts(), self.partial.decode("utf-8", "replace")))
            return
        text, reply = self._telnet(d)
        if reply:
            self.send_raw(reply)
        text = re.sub(rb"\x1b\[[0-9;]*m", b"", text).replace(b"\r", b"")
        *done, self.partial = (self.partial + text).split(b"\n")
        for line in done:
            self.lines.append((ts(), line.decode("utf-8", "replace")))

    def send_raw(self, b):
        try:
            self.s.setblocking(True)
            self.s.sendall(b)
            self.s.setblocking(False)
        except OSError:
            pass

    def send(self, line):
        self.send_raw(line.encode() + b"\r\n")

    def first(self, needle, since=0.0):
        for t, l in self.lines:
            if t >= since and needle in l:
                return t
        return None

    def seen(self, since=0.0):
        return [l for t, l in self.lines if t >= since]


def pump(players, secs, done=None):
    end = time.time() + secs
    while time.time() < end:
        live = [p for p in players if p.closed_at is None]
        if not live or (done and done()):
            return
        r, _, _ = select.select(live, [], [], 0.1)
        for p in r:
            p.readable()


def direct(port, lines, quiet=1.0):
    """Straight to the game (not through holdfast): send, collect output."""
    p = Player("god", port)
    pump([p], 3)
    for line in lines:
        p.send(line)
        pump([p], quiet)
    p.send("QUIT")
    pump([p], 2)
    return [l for _, l in p.lines]


def show(title, lines, limit=12):
    print(f"  {title}:")
    for l in lines[:limit]:
        print(f"    | {l}")
    if len(lines) > limit:
        print(f"    | ... ({len(lines) - limit} more lines)")


def preauth(args):
    print("== preauth: 3 players at the connect screen at once, through holdfast")
    ps = [Player(f"pre{i}", args.hf_port) for i in range(3)]
    pump(ps, 8)
    for p in ps:
        state = f"closed at {p.closed_at:.1f}s" if p.closed_at else "still open"
        notable = [l for l in p.seen() if "Too many" in l or "[holdfast]" in l]
        print(f"  {p.name}: {len(p.lines)} lines, {state}")
        show("lines from holdfast or naming a limit", notable, 6)
        if not notable:
            show("first lines", [l for l in p.seen() if l.strip()], 3)
    for p in ps:
        if p.closed_at is None:
            p.send("QUIT")
    pump(ps, 3)


def setup(args):
    n = args.players
    print(f"== setup: lift the limits live, create {n} players, log them in through holdfast")
    cmds = [f"@admin {k}=0" for k in ("max_preauth_sitecons", "max_lastsite_cnt")]
    cmds += [f"@pcreate crowd{i}={args.password}" for i in range(n)]
    # Saved, as a running game's players are (TinyMUSH keeps new objects
    # only in memory until a dump).
    cmds += ["@dump"]
    out = direct(args.game_port, [args.god] + cmds, quiet=0.3)
    made = sum(1 for l in out if l.startswith("New player"))
    print(f"  created {made} of {n} players")
    if made != n:
        show("God's session", out, 40)
        return None
    ps = []
    for i in range(n):
        p = Player(f"crowd{i}", args.hf_port)
        ps.append(p)
        pump([p], 5, lambda p=p: p.first("connect") is not None)
        p.send(f"connect crowd{i} {args.password}")
        # Not in the same read as the login: with lazy_connect and resume
        # on, holdfast sends a line that came with the login before it.
        pump([p], 0.3)
        p.send(f"think crowd-in-{i}")
    pump(ps, 60, lambda: all(p.first(f"crowd-in-{p.name[5:]}") for p in ps))
    ok = [p for p in ps if p.first(f"crowd-in-{p.name[5:]}")]
    print(f"  {len(ok)} of {n} logged in through holdfast ({ts():.1f}s)")
    return ps if len(ok) == n else None


def wait_port(port, secs):
    end = time.time() + secs
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.2)
    return False


def restart(args, ps):
    n = len(ps)
    print(f"== restart: kill -9 under {n} logged-in players, start again")
    # Let holdfast's login markers of the last players come back first.
    pump(ps, 3)
    pid = int(open(args.pidfile).read().strip())
    os.kill(pid, signal.SIGKILL)
    t_kill = ts()
    pump(ps, 3)
    held = sum(1 for p in ps if p.first("is down", t_kill))
    print(f"  {held} of {n} got the offline notice")
    t_start = ts()
    subprocess.run(args.start, shell=True, check=False)
    up = wait_port(args.game_port, 120)
    t_up = ts()
    print(f"  game started ({t_up - t_start:.1f}s to accept connections)" if up else "  game did not come back")
    if not up:
        return False

    def resolved(p):
        return (
            p.closed_at is not None
            or p.first("You have been logged back in", t_start)
            or p.first("logging you back in failed", t_start)
        )

    pump(ps, args.watch, lambda: all(resolved(p) for p in ps))
    # A connection closed right after its verdict is counted as closed.
    pump(ps, 2)
    back = [p.first("You have been logged back in", t_start) for p in ps]
    back_t = sorted(t - t_start for t in back if t is not None)
    failed = [p for p in ps if p.first("logging you back in failed", t_start)]
    closed = [p for p in ps if p.closed_at is not None]
    pending = [p for p in ps if not resolved(p)]
    print(f"  logged back in: {len(back_t)} of {n}", end="")
    if back_t:
        print(
            f" (after the restart: first {back_t[0]:.1f}s, median"
            f" {statistics.median(back_t):.1f}s, last {back_t[-1]:.1f}s)"
        )
    else:
        print()
    print(f"  told to log in by hand: {len(failed)}; connection closed: {len(closed)};"
          f" no verdict after {args.watch}s: {len(pending)}")
    kinds = {}
    for p in ps:
        for l in p.seen(t_start):
            if "Too many" in l or "[holdfast]" in l:
                key = re.sub(r"\d+", "N", l.strip())
                kinds[key] = kinds.get(key, 0) + 1
    print("  lines players saw after the restart (holdfast's and the game's limits), by count:")
    for k, c in sorted(kinds.items(), key=lambda kv: -kv[1]):
        print(f"    {c:4d}  {k}")
    for p in (failed + pending)[:1]:
        show(f"{p.name}, everything after the restart", p.seen(t_start), 30)
    # Who can really play now: a think answered.
    live = [p for p in ps if p.closed_at is None]
    for p in live:
        p.send(f"think crowd-after-{p.name[5:]}")
    pump(live, 10, lambda: all(p.first(f"crowd-after-{p.name[5:]}") for p in live))
    playing = sum(1 for p in live if p.first(f"crowd-after-{p.name[5:]}"))
    print(f"  answering 'think' after the watch: {playing} of {n}")
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hf-port", type=int, required=True)
    ap.add_argument("--game-port", type=int, required=True)
    ap.add_argument("--god", required=True, help="God's login line")
    ap.add_argument("--players", type=int, default=45)
    ap.add_argument("--password", default="Crowd-Pw-2718")
    ap.add_argument("--pidfile", required=True)
    ap.add_argument("--start", required=True, help="shell command that starts the game")
    ap.add_argument("--watch", type=float, default=180.0, help="seconds to watch after the restart")
    args = ap.parse_args()
    preauth(args)
    ps = setup(args)
    if ps is None:
        return 1
    return 0 if restart(args, ps) else 1


if __name__ == "__main__":
    sys.exit(main())
