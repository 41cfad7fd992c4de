"""Code size report for e4e_jax: files over 400 lines, the 5 longest functions, import cycles.

    python tools/code_stats.py [ROOT]        # ROOT: a checkout (default .)

Counts lazy (function-level) imports too; a package __init__ re-exporting its own submodules
is not a cycle. Used for the before/after table of issue 15.
"""
import ast, os, sys
from collections import defaultdict

root = sys.argv[1] if len(sys.argv) > 1 else "."; pkg = "e4e_jax"; limit = 400
files = {}
for dp, _, fns in os.walk(os.path.join(root, pkg)):
    for f in fns:
        if f.endswith(".py"):
            p = os.path.join(dp, f)
            mod = os.path.relpath(p, root)[:-3].replace(os.sep, ".")
            if mod.endswith(".__init__"): mod = mod[:-9]
            files[mod] = p
big, funcs, graph = [], [], defaultdict(set)
for mod, p in sorted(files.items()):
    src = open(p).read(); n = src.count("\n")
    if n > limit: big.append((n, os.path.relpath(p, root)))
    tree = ast.parse(src)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            funcs.append((node.end_lineno - node.lineno + 1, f"{os.path.relpath(p, root)}:{node.name}"))
        if isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:
                parts = mod.split(".") if p.endswith("__init__.py") else mod.split(".")[:-1]
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + [node.module])
            for a in node.names:
                cand = f"{base}.{a.name}"
                tgt = cand if cand in files else base
                if tgt in files and tgt != mod: graph[mod].add(tgt)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name in files and a.name != mod: graph[mod].add(a.name)
# cycles via Tarjan SCC (package __init__ edges to own submodules excluded: re-export facades)
def drop_init(a, b): return b.startswith(a + ".")
g = {a: {b for b in bs if not drop_init(a, b) and not drop_init(b, a)} for a, bs in graph.items()}
idx, low, st, on, sccs, c = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)
def strong(v):
    idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
    for w in g.get(v, ()):
        if w not in idx: strong(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        comp = []
        while True:
            w = st.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: sccs.append(sorted(comp))
for v in list(files):
    if v not in idx: strong(v)
print(f"## {root}")
print(f"files: {len(files)}; files over {limit} lines: {len(big)}")
for n, p in sorted(big, reverse=True): print(f"  {n:5d}  {p}")
print("longest functions:")
for n, f in sorted(funcs, reverse=True)[:5]: print(f"  {n:5d}  {f}")
print(f"functions over 80 lines: {sum(1 for n, _ in funcs if n > 80)}")
print(f"import cycles (incl. lazy imports): {len(sccs)}")
for s in sccs: print("  " + " <-> ".join(s))
