#!/usr/bin/env python
"""The joints of the package, counted from its source (issue: one catalogue, one verification
seam, configuration in one place, small functions). Prints each figure beside its bound and
exits 1 when one is exceeded:

    python eval/code_joints.py [--package agcnn_zoo] [--verbose]

* functions longer than 60 lines (decorators excluded, docstring included);
* modules that read the environment (``os.environ`` / ``os.getenv``), and reads at import time
  (outside any function);
* modules that compute sha256 (``hashlib.sha256`` / ``"sha256"`` passed to a digest helper);
* imports of the package's own modules inside functions;
* import cycles among the package's modules (module-level imports);
* places that split or compose a weight id ``NAME.TAG`` (``.partition(".")`` /
  ``.split(".", 1)`` on an id, or an f-string ``"{...}.{...}"`` joining name and tag);
* a manifest with one weight id twice is refused, naming it (checked by loading one);
* the bytes a pretrained load of a packaged weight feeds to sha256 (once its size), and whether
  it imports huggingface_hub (it must not), measured in a fresh interpreter.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Set, Tuple

ROOT = Path(__file__).resolve().parents[1]
BOUNDS = {"long functions": 0, "env modules": 2, "env reads at import": 0, "sha256 modules": 2,
          "imports inside functions": 20, "import cycles": 0, "weight-id split places": 1}


def modules(package: Path) -> Dict[str, Path]:
    out = {}
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def long_functions(tree: ast.AST) -> List[str]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > 60:
                out.append(f"{node.name} ({n} lines)")
    return out


def _env_calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") and \
                isinstance(node.value, ast.Name) and node.value.id == "os":
            yield node


def env_at_import(tree: ast.Module) -> int:
    """Environment reads outside any function or class body method (run when imported)."""
    count = 0
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(stmt, ast.ClassDef):
            stmts = [s for s in stmt.body if not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))]
        else:
            stmts = [stmt]
        for s in stmts:
            count += sum(1 for _ in _env_calls(s))
    return count


def uses_sha256(tree: ast.AST) -> bool:
    """``hashlib.sha256`` or a digest helper asked for "sha256" (``hashlib.new("sha256")``,
    ``file_digest(path, "sha256")``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "sha256":
            if isinstance(node.value, ast.Name) and node.value.id == "hashlib":
                return True
        if isinstance(node, ast.Call) and any(isinstance(a, ast.Constant) and a.value == "sha256"
                                              for a in node.args):
            func = ast.unparse(node.func)
            if func.endswith(("digest", ".new")):
                return True
    return False


def inner_imports(tree: ast.AST, module: str, is_package: bool, package: str) -> int:
    count = 0
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.ImportFrom):
                target = _resolve(module, node, is_package)
                count += target == package or target.startswith(package + ".")
            elif isinstance(node, ast.Import):
                count += sum(a.name == package or a.name.startswith(package + ".") for a in node.names)
    return count


def top_imports(tree: ast.Module, module: str, is_package: bool, known: Set[str]) -> Set[str]:
    out = set()
    for stmt in tree.body:
        nodes = [stmt]
        if isinstance(stmt, ast.If):  # e.g. TYPE_CHECKING blocks are not imports at run time
            continue
        for node in nodes:
            if isinstance(node, ast.ImportFrom):
                base = _resolve(module, node, is_package)
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    out.add(full if full in known else base)
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
    return {m for m in out if m in known and m != module}


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
    for v in graph:
        if v not in index:
            visit(v)
    return out


_ID_WORDS = ("weight_id", "wid", "name", "key", "file", "tag")


def weight_id_splits(tree: ast.AST) -> int:
    """``x.partition(".")`` / ``x.split(".", 1)`` / ``x.split(".")`` on something named like a
    weight id (``weight_id``, ``wid``, ``name``, ``key``), and f-strings ``f"{name}.{tag}"``."""
    count = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            args = node.args
            if node.func.attr in ("partition", "split") and args and \
                    isinstance(args[0], ast.Constant) and args[0].value == ".":
                receiver = ast.unparse(node.func.value).lower()
                count += any(w in receiver for w in _ID_WORDS[:4])
        if isinstance(node, ast.JoinedStr):
            vals = node.values
            for a, b, c in zip(vals, vals[1:], vals[2:]):
                if isinstance(a, ast.FormattedValue) and isinstance(c, ast.FormattedValue) and \
                        isinstance(b, ast.Constant) and b.value == "." and \
                        "tag" in ast.unparse(c.value).lower():
                    count += 1
    return count


def duplicated_id_refused() -> str:
    """Load a manifest holding one weight id twice; the refusal must name it."""
    sys.path.insert(0, str(ROOT))
    from agcnn_zoo.hub.manifest import load_manifest
    rec = {"file": "x.safetensors"}
    text = '{"schema": 1, "weights": {"dup_model": %s, "dup_model": %s}}' % (json.dumps(rec), json.dumps(rec))
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "m.json"
        p.write_text(text)
        try:
            load_manifest(p)
        except Exception as e:
            return "refused, naming it" if "dup_model" in str(e) else f"refused without the name: {e}"
    return "ACCEPTED"


#: run in a fresh interpreter: counts the bytes fed to sha256 (at hashlib itself) while
#: create_model loads a packaged weight, and whether huggingface_hub got imported
LOAD_PROBE = r"""
import hashlib, sys
fed = []
real_sha, real_new = hashlib.sha256, hashlib.new
class Counting:
    def __init__(self, h): self.h = h
    def update(self, b): fed.append(len(b)); self.h.update(b)
    def hexdigest(self): return self.h.hexdigest()
    def digest(self): return self.h.digest()
def sha256(data=b"", **kw):
    c = Counting(real_sha(**kw)); c.update(data) if data else None; return c
def new(name, data=b"", **kw):
    if name.lower() == "sha256": return sha256(data)
    return real_new(name, data, **kw)
hashlib.sha256, hashlib.new = sha256, new
import agcnn_zoo as zoo
from agcnn_zoo.hub import get_record
zoo.create_model("p4cnn_rotmnist", pretrained=True)
print(sum(fed), get_record("p4cnn_rotmnist").size, "huggingface_hub" in sys.modules)
"""


def hashed_per_load(cache_dir: str) -> Tuple[int, int, bool]:
    """(bytes hashed, file size, huggingface_hub imported) for one pretrained load of the
    packaged p4cnn_rotmnist weight, with an empty cache in ``cache_dir``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AGCNN_ZOO_CACHE": cache_dir}
    p = subprocess.run([sys.executable, "-c", LOAD_PROBE], capture_output=True, text=True,
                       cwd=ROOT, env=env)
    if p.returncode:
        raise RuntimeError(f"the load probe failed: {p.stderr[-2000:]}")
    hashed, size, hub_client = p.stdout.split()
    return int(hashed), int(size), hub_client == "True"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--package", default="agcnn_zoo")
    ap.add_argument("--verbose", action="store_true", help="list what each figure counts")
    args = ap.parse_args(argv)
    pkg = ROOT / args.package
    mods = modules(pkg)
    known = set(mods)
    figures: Dict[str, List[str]] = defaultdict(list)
    graph: Dict[str, Set[str]] = {}
    inner = 0
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        is_package = path.name == "__init__.py"
        figures["long functions"] += [f"{name}.{f}" for f in long_functions(tree)]
        if any(True for _ in _env_calls(tree)):
            figures["env modules"].append(name)
        if env_at_import(tree):
            figures["env reads at import"].append(name)
        if uses_sha256(tree):
            figures["sha256 modules"].append(name)
        n = inner_imports(tree, name, is_package, args.package)
        inner += n
        if n:
            figures["imports inside functions"].append(f"{name} ({n})")
        k = weight_id_splits(tree)
        if k:
            figures["weight-id split places"].append(f"{name} ({k})")
        graph[name] = top_imports(tree, name, is_package, known)
    figures["import cycles"] = [" <-> ".join(c) for c in cycles(graph)]
    failed = False
    for key, bound in BOUNDS.items():
        value = inner if key == "imports inside functions" else len(figures[key])
        ok = value <= bound
        failed |= not ok
        print(f"{key:28s} {value:4d}  (at most {bound}) {'ok' if ok else 'OVER'}")
        if args.verbose or not ok:
            for item in figures[key]:
                print(f"    {item}")
    dup = duplicated_id_refused()
    failed |= dup != "refused, naming it"
    print(f"{'duplicated weight id':28s} {dup}")
    with tempfile.TemporaryDirectory() as d:
        hashed, size, hub_client = hashed_per_load(d)
    once = hashed == size and not hub_client
    failed |= not once
    print(f"{'pretrained load':28s} {hashed:,} bytes hashed for a {size:,}-byte weight"
          f"{', huggingface_hub imported' if hub_client else ''} {'ok' if once else 'OVER'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
