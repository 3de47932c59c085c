"""The repository's promises about itself: CI runs the README's test command, exactly."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.startswith("    pip install")]


def test_ci_runs_the_readme_test_commands_exactly():
    """The README's test commands (the main suite, the lmms-eval tests) are CI's legs, character for character."""
    test_cmds = [c for c in _readme_commands() if "pytest" in c]
    assert len(test_cmds) == 2, test_cmds
    assert test_cmds[0].endswith('pip install -e ".[dev]" && python -m pytest -q'), test_cmds[0]
    assert '".[dev,lmms-eval]"' in test_cmds[1] and "tests/test_lmms_eval.py" in test_cmds[1], test_cmds[1]
    ci = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    for cmd in test_cmds:
        assert cmd in ci, f"README test command and .ci/run differ: {cmd}"


def test_select_imports_nothing_but_torch_and_numpy():
    import ast

    allowed = {"torch", "numpy", "math", "dataclasses", "typing", "__future__", "collections", "functools",
               "logging", "abc", "itertools", "warnings", "streamprune"}
    for f in (ROOT / "streamprune" / "select").rglob("*.py"):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for n in names:
                top = n.split(".")[0]
                assert top in allowed, f"{f.name} imports {n}"
                if top == "streamprune":
                    assert n.startswith("streamprune.select"), f"{f.name} imports {n}"


def _imports(path: Path) -> set[str]:
    """Absolute module names a file imports (relative imports resolved against streamprune)."""
    import ast

    rel = path.relative_to(ROOT).with_suffix("").parts  # ('streamprune', 'models', 'base')
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(rel[: len(rel) - node.level])
                out.add(".".join(base + ([node.module] if node.module else [])))
            else:
                out.add(node.module or "")
    return out


def test_dependency_direction():
    """select <- models <- pipeline <- live <- cli; readers used by pipeline only; models print nothing."""
    forbidden = {
        "models": ("streamprune.cli", "streamprune.pipeline", "streamprune.live", "streamprune.readers",
                   "streamprune.bench", "rich"),
        "readers": ("streamprune.models", "streamprune.select", "streamprune.pipeline", "streamprune.cli",
                    "streamprune.bench"),
    }
    for pkg, bad in forbidden.items():
        for f in (ROOT / "streamprune" / pkg).rglob("*.py"):
            for name in _imports(f):
                assert not name.startswith(bad), f"{f.relative_to(ROOT)} imports {name}"
    for f in ("pipeline.py", "live.py"):
        for name in _imports(ROOT / "streamprune" / f):
            assert not name.startswith(("streamprune.cli", "streamprune.bench")), f"{f} imports {name}"


def test_every_lower_bound_is_pinned_in_ci_lowest_constraints():
    """Each `>=` (or `==`) bound in pyproject.toml is pinned `==` in .ci/lowest.txt, which CI's lowest leg installs."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = list(project["build-system"]["requires"]) + list(project["project"]["dependencies"])
    for extra in project["project"]["optional-dependencies"].values():
        reqs += extra
    pins = {}
    for ln in (ROOT / ".ci" / "lowest.txt").read_text().splitlines():
        ln = ln.split("#")[0].strip()
        if ln:
            name, _, version = ln.partition("==")
            assert version, f".ci/lowest.txt: {ln!r} is not a `name==version` pin"
            pins[canonicalize_name(name)] = Version(version)
    checked = 0
    for r in map(Requirement, reqs):
        name = canonicalize_name(r.name)
        if name == "streamprune":
            continue
        lows = [Version(s.version) for s in r.specifier if s.operator in (">=", "==")]
        assert lows, f"pyproject.toml: {r} has no lower bound"
        assert name in pins, f"{r.name} (lower bound {lows[0]}) is not pinned in .ci/lowest.txt"
        assert pins[name] == max(lows), f"{r.name}: pyproject lower bound {max(lows)}, .ci/lowest.txt pins {pins[name]}"
        assert pins[name] in r.specifier, f"{r.name}: .ci/lowest.txt pins {pins[name]}, outside {r.specifier}"
        checked += 1
    assert checked >= 15
