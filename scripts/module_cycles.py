#!/usr/bin/env python3
"""Imports between holdfast's modules run one way only (issue 26).

Reads the sources (cargo-modules stops at a trait impl on a foreign type,
our PlayerTransport for tokio's TcpStream): every `crate::a::b...` path in
a file, and every item of a `use crate::{...}` group, is an edge from that
file's module to the deepest module of the path that is a file. A module
and its submodules (`config` and `config::bus`) are one node at the given
depth. Test files (`tests.rs`, `*_tests.rs`) and inline `mod tests` are
left out: a test may use anything.

Then two checks:
  - cycles: the strongly connected components with more than one member;
  - layers (depth 1 only): the layer order written in `src/lib.rs`'s
    "Layers" section (lines `//! N. `a`, `b` ...`); every module must be in
    exactly one layer, and every import must go to a strictly lower one.

Usage: scripts/module_cycles.py [DEPTH] [--edges] [--files]
(DEPTH default 1: top-level modules; 2: `backend::health` level; --edges
prints every edge). --files: each file its own node, and `super::` and
`self::` paths count too; edges between a module and its own parent or
children (`mod.rs` and its files) are left out: circles between the
sibling files of a module (CI runs it too). Exit 1 when a cycle exists or a layer
rule is broken.
"""
import os, re, sys
from collections import defaultdict

args = [a for a in sys.argv[1:] if not a.startswith("--")]
show_edges = "--edges" in sys.argv
files = "--files" in sys.argv
depth = 99 if files else (int(args[0]) if args else 1)
here = os.path.dirname(os.path.abspath(__file__))
root = os.path.join(here, "..", "src")
mods = {}
for dp, _, fs in os.walk(root):
    for f in fs:
        if not f.endswith(".rs") or f == "tests.rs" or f.endswith("_tests.rs"):
            continue
        rel = os.path.relpath(os.path.join(dp, f), root)[:-3].split(os.sep)
        if "tests" in rel[:-1]:
            continue
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
    text = re.split(r"#\[cfg\(test\)\]\s*mod tests\s*\{", text)[0]
    # Comments and doc links are not dependencies.
    text = re.sub(r"//[^\n]*", "", text)
    src = node(m)
    paths = re.findall(r"crate::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)", text)
    for grp in re.findall(r"use crate::\{([^}]*)\}", text):
        paths += [item.strip() for item in grp.split(",") if item.strip()]
    if files:
        # Relative paths, made absolute: `super::` is the parent module,
        # `self::` and a child's bare name this one.
        parent = list(m[:-1])
        rel = re.findall(r"\bsuper::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)", text)
        for grp in re.findall(r"use super::\{([^}]*)\}", text):
            rel += [i.strip() for i in grp.split(",") if i.strip()]
        paths += ["::".join(parent + r.split("::")) for r in rel]
        own = re.findall(r"\bself::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)", text)
        # A parent's private `use child::...` (not `pub use`).
        own += re.findall(r"(?m)^\s*use ((?:[a-z_][a-z0-9_]*::)+[A-Za-z_{][^;]*);", text)
        for o in own:
            head = o.split("::")[0]
            if tuple(list(m) + [head]) in known:
                paths.append("::".join(list(m) + [x for x in o.replace("{", "").split("::") if x]))
    for p in paths:
        parts = [x for x in p.replace("{", "").split("::") if x]
        best = None
        for i in range(len(parts), 0, -1):
            if tuple(parts[:i]) in known:
                best = parts[:i]
                break
        if best is None:
            continue
        dst = node(best)
        if files and (dst.startswith(src + "::") or src.startswith(dst + "::")):
            # A module and its own parent or child (`mod.rs` and its
            # files) are one room: only circles between siblings count.
            continue
        if dst != src:
            edges[src].add(dst)

nodes = sorted({node(m) for m in mods})
if show_edges:
    for a in nodes:
        print(a, "->", ", ".join(sorted(edges[a])) or "(nothing)")

# Tarjan
index, low, on, stack, out, n = {}, {}, set(), [], [], [0]


def strong(v):
    index[v] = low[v] = n[0]
    n[0] += 1
    stack.append(v)
    on.add(v)
    for w in edges[v]:
        if w not in index:
            strong(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            out.append(sorted(comp))


sys.setrecursionlimit(10000)
for v in nodes:
    if v not in index:
        strong(v)
bad = False
for c in out:
    bad = True
    print("cycle:", " <-> ".join(c))
    for a in c:
        print("   ", a, "->", ", ".join(sorted(x for x in edges[a] if x in c)))

if depth == 1:
    lib = open(os.path.join(root, "lib.rs")).read()
    sect = lib.split("//! # Layers", 1)
    if len(sect) < 2:
        print("src/lib.rs has no '# Layers' section")
        sys.exit(1)
    layer = {}
    for line in sect[1].split("\n")[1:]:
        if not line.startswith("//!"):
            break
        mm = re.match(r"//!\s*(\d+)\.\s*(.*)", line)
        if not mm:
            continue
        names = re.findall(r"`([a-z_]+)`", mm.group(2).split("—")[0].split(" - ")[0])
        for name in names:
            if name in layer:
                print(f"lib.rs: `{name}` is in layers {layer[name]} and {mm.group(1)}")
                bad = True
            layer[name] = int(mm.group(1))
    for v in nodes:
        if v not in layer:
            print(f"lib.rs: module `{v}` is in no layer")
            bad = True
    for v in layer:
        if v not in nodes:
            print(f"lib.rs: layer lists `{v}`, which is not a module")
            bad = True
    up = 0
    for a in nodes:
        for b in sorted(edges[a]):
            if a in layer and b in layer and layer[b] >= layer[a]:
                up += 1
                print(f"layer rule: `{a}` (layer {layer[a]}) imports `{b}` (layer {layer[b]})")
                bad = True
    if not bad:
        print(
            f"no import cycle between modules; {len(nodes)} modules in "
            f"{len(set(layer.values()))} layers, every import runs down"
        )
elif not bad:
    print(f"no import cycle between modules at depth {depth} ({len(nodes)} modules)" if not files else f"no import circle between the files of a module ({len(nodes)} files)")
sys.exit(1 if bad else 0)
