#!/usr/bin/env python3
"""Lines of every Rust `fn` body, longest first.

    python3 ci/fn_lengths.py [--over N] [DIR_OR_FILE ...]

Defaults: harness/src, harness/macros/src, watcher/src, watcher/shutdown/src, over 60 lines.
A body's length is the lines from the line of its `fn` to the line of its closing brace.
Comments, strings and char literals are blanked before braces are matched, so a brace in a
string or a doc example is not counted; a nested `fn` is listed on its own and also counts in
the function around it. Exits 0 always: it measures, it does not judge.
"""
import os
import re
import sys

DEFAULT_DIRS = ["harness/src", "harness/macros/src", "watcher/src", "watcher/shutdown/src"]


def blank(src):
    """`src` with comments, strings and char literals replaced by spaces (newlines kept)."""
    out = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', src[i:]) and not (i and (src[i - 1].isalnum() or src[i - 1] == "_")):
            hashes = re.match(r"r(#*)\"", src[i:]).group(1)
            end = src.find('"' + hashes, i + 2 + len(hashes))
            j = n if end < 0 else end + 1 + len(hashes)
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            j += 1
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
        elif c == "'":
            m = re.match(r"'(\\(x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)|[^\\\n])'", src[i:])
            if m:  # a char literal; otherwise a lifetime or label
                out.append(" " * len(m.group(0)))
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


FN = re.compile(r"\bfn\s+([A-Za-z_][A-Za-z0-9_]*)")


def functions(path):
    """(name, first line, lines) for every fn with a body in the file at `path`."""
    src = blank(open(path, encoding="utf-8").read())
    found = []
    for m in FN.finditer(src):
        # The body starts at the first `{` at bracket depth 0 after the name, unless a `;`
        # comes first (a declaration in a trait or an extern block).
        depth, j = 0, m.end()
        while j < len(src):
            ch = src[j]
            if ch in "(<[":
                depth += 1
            elif ch in ")]" or (ch == ">" and src[j - 1] != "-" and src[j - 1] != "="):
                depth -= 1
            elif ch == ";" and depth <= 0:
                j = -1
                break
            elif ch == "{" and depth <= 0:
                break
            j += 1
        if j < 0 or j >= len(src):
            continue
        braces, k = 0, j
        while k < len(src):
            if src[k] == "{":
                braces += 1
            elif src[k] == "}":
                braces -= 1
                if braces == 0:
                    break
            k += 1
        first = src.count("\n", 0, m.start()) + 1
        last = src.count("\n", 0, k) + 1
        found.append((m.group(1), first, last - first + 1))
    return found


def rust_files(root):
    if os.path.isfile(root):
        yield root
        return
    for d, _, files in os.walk(root):
        for f in sorted(files):
            if f.endswith(".rs"):
                yield os.path.join(d, f)


def main(argv):
    over = 60
    if argv[:1] == ["--over"]:
        over, argv = int(argv[1]), argv[2:]
    rows = []
    for root in argv or DEFAULT_DIRS:
        for path in rust_files(root):
            rows += [(n, path, line, name) for name, line, n in functions(path) if n > over]
    for n, path, line, name in sorted(rows, reverse=True):
        print(f"{n:4}  {path}:{line}  {name}")
    print(f"{len(rows)} functions over {over} lines")


if __name__ == "__main__":
    main(sys.argv[1:])
