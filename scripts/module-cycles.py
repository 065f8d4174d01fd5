#!/usr/bin/env python3
"""Lists import cycles between the modules of one crate's src/ (a module = a file, or a folder's
mod.rs): which module names which (`crate::a::b`, `super::x`, `self::y` in code, not comments).
Exits 1 when two modules import each other, directly or through others. Usage:
    scripts/module-cycles.py bins/src
"""
import os
import re
import sys


def modules(src):
    mods = {}
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            rel = os.path.relpath(path, src)[:-3].split(os.sep)
            if rel[-1] in ("mod", "lib", "main"):
                rel = rel[:-1]
            if rel and rel[0] == "bin":
                continue
            if rel and rel[-1] == "tests":  # unit tests of their parent
                rel = rel[:-1]
            mods.setdefault(tuple(rel), []).append(path)
    return mods


def code(path):
    text = open(path, encoding="utf-8").read()
    text = re.sub(r"(?m)^\s*//.*$", "", text)
    return text


def resolve(mod, path, known):
    """The longest known module that `path` (a list of segments) names from `mod`."""
    if not path:
        return None
    if path[0] == "crate":
        base, rest = (), path[1:]
    elif path[0] in ("super", "self"):
        base = list(mod)
        rest = list(path)
        while rest and rest[0] in ("super", "self"):
            if rest[0] == "super":
                base = base[:-1]
            rest = rest[1:]
        base = tuple(base)
    else:
        return None
    best = None
    for n in range(len(rest) + 1):
        cand = base + tuple(rest[:n])
        if cand in known:
            best = cand
    return best


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "bins/src"
    mods = modules(src)
    known = set(mods)
    edges = {m: set() for m in mods}
    pat = re.compile(r"\b((?:crate|super|self)(?:::\w+)+)")
    group = re.compile(r"\b((?:crate|super|self)(?:::\w+)*)::\{([^}]*)\}")
    texts = []
    for mod, paths in mods.items():
        for p in paths:
            text = code(p)
            # An inline `#[cfg(test)] mod tests` (at the end of a file, as the house puts it) is
            # a module of its own, below the one it tests.
            cut = re.search(r"#\[cfg\(test\)\]\s*mod tests \{", text)
            if cut:
                test_mod = mod + ("tests",)
                edges.setdefault(test_mod, set())
                texts.append((test_mod, text[cut.start():]))
                text = text[: cut.start()]
            texts.append((mod, text))
    for mod, text in texts:
        refs = [m.group(1).split("::") for m in pat.finditer(text)]
        for g in group.finditer(text):
            for item in g.group(2).split(","):
                item = item.strip().split(" as ")[0]
                if item and item != "self":
                    refs.append(g.group(1).split("::") + item.split("::"))
        for r in refs:
            target = resolve(mod, r, known)
            # a parent naming its own children (mod lines, re-exports) is structure, not a cycle
            if target is None or target == mod or target[: len(mod)] == mod:
                continue
            if mod[: len(target)] == target:
                continue  # a child naming its parent
            edges[mod].add(target)
    # Tarjan's strongly connected components.
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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
                comps.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    name = lambda m: "::".join(m) or "(crate root)"
    if comps:
        for c in comps:
            print("modules importing each other:", ", ".join(sorted(name(m) for m in c)))
        return 1
    print(f"{src}: {len(mods)} modules, no import cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
