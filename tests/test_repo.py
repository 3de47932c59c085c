"""The repository's promises about itself: CI runs the README's test command, exactly."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.startswith("    pip install")]


def test_ci_runs_the_readme_test_command_exactly():
    test_cmds = [c for c in _readme_commands() if "pytest" in c]
    assert len(test_cmds) == 1, test_cmds
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmds[0] in [ln.strip() for ln in ci], "README test command and .ci/run differ"


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
