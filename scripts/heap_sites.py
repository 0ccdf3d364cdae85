#!/usr/bin/env python3
"""Live memory by allocation site, from a jemalloc heap profile.

A profile comes from the measuring build (`--features jemalloc-prof`, run
with `_RJEM_MALLOC_CONF=prof:true` and `HOLDFAST_JEMALLOC_STATS_DIR=<dir>`:
the proxy writes `<dir>/<pid>.<n>.heap` every second, `n` being the line of
`<dir>/<pid>.log` for that second). jeprof names inlined Rust frames
poorly; this resolves each stack with `addr2line -i`, skips the
allocator's and the standard library's frames, and groups by the first
DEPTH frames left.

Usage: scripts/heap_sites.py BINARY PROFILE [DEPTH [TOP]]

The figures are jemalloc's sampled bytes (not scaled up): compare sites
within one profile, not across runs with different sampling.
"""

import collections
import re
import subprocess
import sys

# Frames that say where an allocation happened inside the allocator or a
# container, not who asked for it.
SKIP_FN = re.compile(
    r"^(alloc::|core::|std::|hashbrown::|<alloc|<core|<std|<hashbrown|"
    r"_rjem|tikv_|<tikv|__rust|smallvec|<smallvec|bytes::|<bytes)"
)
SKIP_FILE = {
    "alloc.rs", "raw_vec.rs", "block.rs", "boxed.rs", "vec.rs", "slice.rs",
    "map.rs", "raw.rs", "mod.rs", "arc.rs", "rc.rs", "string.rs",
}


def load(heap_path, binary):
    text = open(heap_path).read()
    body, _, maps = text.partition("MAPPED_LIBRARIES:")
    base = None
    for line in maps.splitlines():
        if binary in line and " 00000000 " in line:
            base = int(line.split("-")[0], 16)
            break
    if base is None:
        sys.exit(f"{binary} is not mapped in {heap_path} (was it this binary?)")
    records, stack = [], None
    for line in body.splitlines():
        if line.startswith("@"):
            stack = [int(a, 16) for a in line[1:].split()]
        elif stack is not None and line.strip().startswith("t*:"):
            m = re.match(r"\s*t\*: (\d+): (\d+)", line)
            records.append((stack, int(m.group(1)), int(m.group(2))))
            stack = None
    return base, records


def symbolize(binary, base, addrs):
    # The return addresses point after the call: look one byte back.
    args = [hex(a - base - 1) for a in addrs]
    out = subprocess.run(
        ["addr2line", "-a", "-f", "-i", "-C", "-e", binary] + args,
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    frames, cur, i = {}, None, 0
    while i < len(out):
        if out[i].startswith("0x"):
            cur = int(out[i], 16) + base + 1
            frames[cur] = []
            i += 1
            continue
        loc = out[i + 1] if i + 1 < len(out) else ""
        frames[cur].append((out[i], loc))
        i += 2
    return frames


def useful(fn, loc):
    file = loc.rsplit("/", 1)[-1].split(":")[0]
    return not (
        SKIP_FN.match(fn)
        or "::" not in fn
        or re.search(r"\.[ch]:", loc)
        or "jemalloc" in loc
        or file in SKIP_FILE
    )


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    binary, heap = sys.argv[1], sys.argv[2]
    depth = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    top = int(sys.argv[4]) if len(sys.argv) > 4 else 30
    base, records = load(heap, binary)
    addrs = sorted({a for s, _, _ in records for a in s if a >= base})
    frames = symbolize(binary, base, addrs)
    by_site, count = collections.Counter(), collections.Counter()
    for stack, n, b in records:
        key = []
        for a in stack:
            for fn, loc in frames.get(a, []):
                if useful(fn, loc):
                    short = re.sub(r"<[^<>]*>", "", re.sub(r"<[^<>]*>", "", fn))
                    key.append(f"{short[:90]} @{loc.rsplit('/', 1)[-1]}")
            if len(key) >= depth:
                break
        site = " <- ".join(key[:depth]) or "?"
        by_site[site] += b
        count[site] += n
    print(f"sampled bytes live: {sum(by_site.values())}")
    for site, b in by_site.most_common(top):
        print(f"{b:9d} {count[site]:6d}  {site}")


if __name__ == "__main__":
    main()
