"""The package's layout, read statically from the source (every import, function-level lazy ones included):
no import cycles, no module using another module's private names, the dependency direction, and the
import graph that ARCHITECTURE.md draws is the one the code has."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "streamprune"


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, Path]:
    return {_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _owner(name: str) -> str | None:
    """The streamprune module that `name` (a module or a name inside one) lives in."""
    mods = _modules()
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def _resolve(module: str, level: int, target: str | None) -> str:
    """Absolute name of `from <level dots><target> import ...` written in `module`."""
    if level == 0:
        return target or ""
    base = module.split(".") if _modules()[module].name == "__init__.py" else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


@cache
def _scan(module: str) -> tuple[frozenset[str], tuple[str, ...]]:
    """(streamprune modules `module` imports, its uses of other modules' private names)."""
    tree = ast.parse(_modules()[module].read_text())
    deps, private, alias = set(), [], {}  # alias: local name -> streamprune module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "streamprune":
                    deps.add(_owner(a.name))
                    alias[a.asname or "streamprune"] = a.name if a.asname else "streamprune"  # what the name binds
        elif isinstance(node, ast.ImportFrom):
            src = _resolve(module, node.level, node.module)
            if src.split(".")[0] != "streamprune":
                continue
            for a in node.names:
                full = f"{src}.{a.name}"
                if full in _modules():  # `from pkg import submodule`
                    deps.add(full)
                    alias[a.asname or a.name] = full
                else:
                    deps.add(_owner(src))
                    if a.name.startswith("_") and not a.name.startswith("__") and _owner(src) != module:
                        private.append(f"from {src} import {a.name}")
    for node in ast.walk(tree):  # mod._name / pkg.mod._name through an imported module
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            chain, v = [], node.value
            while isinstance(v, ast.Attribute):
                chain.append(v.attr)
                v = v.value
            if isinstance(v, ast.Name) and v.id in alias:
                target = ".".join([alias[v.id], *reversed(chain)])
                if target in _modules() and target != module:
                    private.append(f"{target}.{node.attr}")
    deps.discard(module)
    deps.discard(None)
    return frozenset(deps), tuple(private)


def _graph() -> dict[str, set[str]]:
    return {m: set(_scan(m)[0]) for m in _modules()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), i.e. the import cycles."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_scanner_sees_lazy_imports_cycles_and_private_names(tmp_path):
    """The checks below could fail: a function-level import is an edge, a two-module loop is a cycle."""
    assert "streamprune.models.decoder_prune" in _scan("streamprune.models.base")[0]  # imported inside a method
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_no_module_uses_another_modules_private_names():
    found = {m: _scan(m)[1] for m in _modules() if _scan(m)[1]}
    assert found == {}, "\n".join(f"{m}: {', '.join(v)}" for m, v in found.items())


def _unit(module: str) -> str:
    """streamprune.models.base -> models; streamprune.cli -> cli; streamprune -> streamprune."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "streamprune"


def test_dependency_direction():
    """select imports nothing of streamprune; models never the CLI, readers, pipeline, live or bench (nor rich);
    readers never models / select / pipeline; only cli (and bench, which runs it) import the CLI; no library
    module imports bench."""
    forbidden = {
        "select": {"models", "readers", "pipeline", "live", "cli", "bench", "config", "checks", "resize"},
        "models": {"cli", "pipeline", "live", "readers", "bench", "config", "checks", "contact_sheet"},
        "readers": {"models", "select", "pipeline", "live", "cli", "bench", "config", "checks"},
        "resize": {"models", "readers", "select", "pipeline", "live", "cli", "bench"},
    }
    for m, deps in _graph().items():
        u = _unit(m)
        used = {_unit(d) for d in deps} - {u}
        assert not used & forbidden.get(u, set()), f"{m} imports {sorted(used & forbidden.get(u, set()))}"
        if u not in ("cli", "bench"):
            assert not used & {"cli", "bench"}, f"{m} imports {sorted(used & {'cli', 'bench'})}"
    for f in (PKG / "models").rglob("*.py"):
        assert "rich" not in {n.split(".")[0] for n in _external(f)}, f"{f.name} imports rich"


def _external(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            out.add(node.module or "")
    return out


# ---------------------------------------------------------------- ARCHITECTURE.md's import graph
ARROW = re.compile(r"^\s{4}([a-z_][\w.]*)\s+->\s+(.+?)\s*$")


def _documented() -> dict[str, set[str]]:
    """The `X -> A, B` lines of ARCHITECTURE.md's "Who imports whom" section (`(nothing)`: no arrow)."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    section = text.split("## Who imports whom", 1)[1].split("\n## ", 1)[0]
    out = {}
    for line in section.splitlines():
        m = ARROW.match(line)
        if m:
            rhs = m.group(2).split("#")[0].strip()
            out[m.group(1)] = set() if rhs == "(nothing)" else {t.strip() for t in rhs.split(",") if t.strip()}
    assert out, "ARCHITECTURE.md has no `X -> A, B` lines under '## Who imports whom'"
    return out


def test_architecture_arrows_are_the_real_imports():
    """Each unit (a top-level module or subpackage) imports exactly the units its arrow names; every unit and
    every module of streamprune.models has its line."""
    doc = _documented()
    real: dict[str, set[str]] = {}
    for m, deps in _graph().items():
        real.setdefault(_unit(m), set()).update(_unit(d) for d in deps if _unit(d) != _unit(m))
        if m.startswith("streamprune.models."):  # inside models: module by module
            key = m.removeprefix("streamprune.")
            real[key] = {d.removeprefix("streamprune.") for d in deps if d.startswith("streamprune.models.")}
    assert set(doc) == set(real), f"missing lines: {sorted(set(real) - set(doc))}; stale: {sorted(set(doc) - set(real))}"
    wrong = {u: (sorted(doc[u]), sorted(real[u])) for u in real if doc[u] != real[u]}
    assert wrong == {}, "\n".join(f"{u}: ARCHITECTURE says {d}, the code imports {r}" for u, (d, r) in wrong.items())


def test_architecture_names_every_module_and_no_retired_path():
    text = (ROOT / "ARCHITECTURE.md").read_text()
    for m in _modules():
        leaf = m.rpartition(".")[2]
        if m.count(".") == 1 or m.startswith("streamprune.models."):
            assert f"{leaf}.py" in text or f"{leaf}/" in text, f"ARCHITECTURE.md does not mention {m}"
    assert "../shared/DESIGN.md" not in text and "docs/design.md" in text
