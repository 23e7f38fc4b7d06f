#!/usr/bin/env python3
"""The module graph of a crate, drawn from its `crate::` paths.

    python3 ci/module_graph.py [--rev REV] [--files] SRC_DIR...

For each SRC_DIR (e.g. harness/src, watcher/src) prints every unit with the units it names
as `crate::...` in its code (comments left out, `$crate::` of macros too), then the counts:
files, files at the top of SRC_DIR, units, arrows, and the cycles (groups of units that reach
each other, and the pairs that import each other directly).

A unit is a top-level file or folder of SRC_DIR (`check`, `source`); with --files, every file
is its own module (`source/mod`, `source/threads`) and a path is resolved to the deepest file
it names. The crate root (`lib.rs`) and binaries (`bin/`, `main.rs`) are not units. With --rev,
the sources are read from that git revision (`git show REV:path`) instead of the work tree, so
that a tree before and after a change can be drawn without a checkout.
"""
import os
import re
import subprocess
import sys


def listing(src, rev):
    """(path relative to src, text) of every .rs file under src."""
    if rev:
        names = subprocess.run(
            ["git", "ls-tree", "-r", "--name-only", rev, "--", src + "/"],
            check=True, capture_output=True, text=True).stdout.split()
        for name in sorted(n for n in names if n.endswith(".rs")):
            text = subprocess.run(["git", "show", f"{rev}:{name}"], check=True,
                                  capture_output=True, text=True).stdout
            yield name[len(src) + 1:], text
        return
    for d, _, files in os.walk(src):
        for f in sorted(files):
            if f.endswith(".rs"):
                path = os.path.join(d, f)
                yield os.path.relpath(path, src), open(path, encoding="utf-8").read()


def code(text):
    """The text with `//` comments removed, line by line (as the architecture tests read it)."""
    return "\n".join(line.split("//")[0] for line in text.splitlines())


def crate_paths(text):
    """Every path named after `crate::`, as a list of segments; `crate::{a, b::c}` (over
    several lines, nested groups too) gives [a] and [b, c]."""
    src = code(text)
    out = []

    def group(body, prefix):
        depth, item = 0, ""
        for ch in body + ",":
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if ch == "," and depth == 0:
                item = item.strip()
                if "{" in item:
                    head, inner = item.split("{", 1)
                    group(inner.rsplit("}", 1)[0], prefix + [s for s in head.split("::") if s])
                elif item:
                    out.append(prefix + [s.strip() for s in item.split("::")])
                item = ""
            else:
                item += ch

    for m in re.finditer(r"(?<![\w$])crate::", src):
        rest = src[m.end():]
        if rest.startswith("{"):
            depth = 0
            for i, ch in enumerate(rest):
                depth += ch == "{"
                depth -= ch == "}"
                if depth == 0:
                    group(rest[1:i], [])
                    break
        else:
            segs = re.match(r"[A-Za-z_][A-Za-z0-9_]*(::[A-Za-z_][A-Za-z0-9_]*)*", rest)
            if segs:
                out.append(segs.group(0).split("::"))
    return out


def module_of(rel):
    """`source/threads.rs` -> `source/threads`, `source/mod.rs` -> `source/mod`."""
    return rel[:-3]


def build(src, rev, files):
    sources = [(rel, text) for rel, text in listing(src, rev)
               if rel not in ("lib.rs", "main.rs") and not rel.startswith("bin/")]
    modules = {module_of(rel) for rel, _ in sources}

    def unit(rel):
        return rel.split("/", 1)[0].removesuffix(".rs") if not files else module_of(rel)

    def target(segs):
        segs = [s for s in segs if re.fullmatch(r"[a-z_][a-z0-9_]*", s)]
        if not files:
            head = segs[0] if segs else ""
            return head if (head in modules or head + "/mod" in modules) else None
        best = None
        for i in range(1, len(segs) + 1):
            p = "/".join(segs[:i])
            if p in modules:
                best = p
            elif p + "/mod" in modules:
                best = p + "/mod"
        return best

    graph = {}
    for rel, text in sources:
        u = unit(rel)
        targets = graph.setdefault(u, set())
        for segs in crate_paths(text):
            t = target(segs)
            if t and t != u:
                targets.add(t)
    return sources, graph


def sccs(graph):
    """Strongly connected components with more than one unit (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
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
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main(argv):
    rev, files = None, False
    while argv and argv[0].startswith("--"):
        if argv[0] == "--rev":
            rev, argv = argv[1], argv[2:]
        elif argv[0] == "--files":
            files, argv = True, argv[1:]
        else:
            sys.exit(__doc__)
    for src in argv:
        sources, graph = build(src.rstrip("/"), rev, files)
        width = max(map(len, graph), default=0)
        print(f"# {src} at {rev or 'the work tree'} ({'files' if files else 'units'})")
        for u in sorted(graph):
            print(f"{u:{width}} ──▶ {', '.join(sorted(graph[u])) or '—'}")
        top = [rel for rel, _ in listing(src.rstrip('/'), rev) if "/" not in rel]
        arrows = sum(map(len, graph.values()))
        cycles = sccs(graph)
        mutual = sorted({tuple(sorted((a, b))) for a in graph for b in graph[a]
                         if a in graph.get(b, ())})
        print(f"files {len(sources) + sum(1 for r, _ in listing(src.rstrip('/'), rev) if r in ('lib.rs', 'main.rs') or r.startswith('bin/'))}, "
              f"files at the top {len(top)}, units {len(graph)}, arrows {arrows}, "
              f"cycle groups {len(cycles)}, mutual imports {len(mutual)}")
        for c in cycles:
            print("cycle group: " + " ↔ ".join(c))
        for a, b in mutual:
            print(f"mutual: {a} ↔ {b}")
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
