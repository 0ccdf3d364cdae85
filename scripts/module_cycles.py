#!/usr/bin/env python3
"""Import cycles between holdfast's modules (issue 12).

cargo-modules 0.27 stops at a trait impl on a foreign type (our
PlayerTransport for tokio's TcpStream), so this reads the sources: every
`crate::a::b...` path in a file is an edge from that file's module to the
deepest module of the path that is a file, and the strongly connected
components with more than one member are the cycles. A module and its own
submodules (`config` and `config::bus`) are folded into one node at the
given depth. Usage: scripts/module_cycles.py [DEPTH] (default 1: top-level
modules; 2: `backend::health` level). Exit 1 when a cycle exists.
"""
import os, re, sys
from collections import defaultdict

depth = int(sys.argv[1]) if len(sys.argv) > 1 else 1
root = os.path.join(os.path.dirname(__file__), "..", "src")
mods = {}
for dp, _, fs in os.walk(root):
    for f in fs:
        if not f.endswith(".rs"):
            continue
        rel = os.path.relpath(os.path.join(dp, f), root)[:-3].split(os.sep)
        if rel[-1] == "mod":
            rel = rel[:-1]
        if rel in (["lib"], ["main"]):
            continue
        mods[tuple(rel)] = os.path.join(dp, f)

def node(path):
    return "::".join(path[:depth])

known = set(mods)
edges = defaultdict(set)
for m, f in mods.items():
    text = open(f).read()
    # Drop test modules: a test may use anything.
    text = re.split(r"#\[cfg\(test\)\]\s*mod tests", text)[0]
    # Comments and doc links are not dependencies.
    text = re.sub(r"//[^\n]*", "", text)
    src = node(m)
    for p in re.findall(r"crate::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)", text):
        parts = p.split("::")
        best = None
        for i in range(len(parts), 0, -1):
            if tuple(parts[:i]) in known:
                best = parts[:i]
                break
        if best is None:
            continue
        dst = node(best)
        if dst != src:
            edges[src].add(dst)
    # `use crate::{a, b::c}` groups
    for grp in re.findall(r"use crate::\{([^}]*)\}", text):
        for item in grp.split(","):
            parts = item.strip().split("::")
            if parts and tuple(parts[:1]) in known:
                dst = node(parts[:max(1, min(depth, len(parts)))]) if tuple(parts[:depth]) in known else node(parts[:1])
                if dst != src:
                    edges[src].add(dst)

# Tarjan
index, low, on, stack, out, n = {}, {}, set(), [], [], [0]
def strong(v):
    index[v] = low[v] = n[0]; n[0] += 1; stack.append(v); on.add(v)
    for w in edges[v]:
        if w not in index:
            strong(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1:
            out.append(sorted(comp))
sys.setrecursionlimit(10000)
for v in sorted({node(m) for m in mods}):
    if v not in index:
        strong(v)
if out:
    for c in out:
        print("cycle:", " <-> ".join(c))
        for a in c:
            print("   ", a, "->", ", ".join(sorted(x for x in edges[a] if x in c)))
    sys.exit(1)
print(f"no import cycle between modules at depth {depth} ({len({node(m) for m in mods})} modules)")
