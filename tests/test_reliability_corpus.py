"""The reliability corpus (streamprune.bench.reliability.CASES): every bad or odd input through the real
CLI, checked for its exit code, exactly one `error:` line on failure, no traceback and a bounded time."""

from __future__ import annotations

import pytest

from streamprune.bench.reliability import CASES, Ctx, markdown, run_case


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return Ctx(tmp_path_factory.mktemp("corpus"))  # the tiny model and the clip are made once, on first use


def test_the_corpus_is_large_and_distinct():
    names = [c.name for c in CASES]
    assert len(names) >= 40 and len(set(names)) == len(names)
    groups = {c.group for c in CASES}
    assert {"file", "argument", "question", "model", "command"} <= groups
    assert sum(c.expected_code() != 0 for c in CASES) >= 40  # failures that must be one clean line
    assert any(c.subprocess for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case, ctx):
    r = run_case(case, ctx)
    assert r.ok, f"{case.name}: {'; '.join(r.problems)}\nstderr: {r.stderr[-800:]}\nstdout: {r.stdout[-300:]}"


def test_markdown_table(ctx):
    results = [run_case(c, ctx) for c in CASES if c.name in ("missing file", "--budget 0")]
    text = markdown(results)
    assert text.startswith("2 cases, 2 as expected.")
    assert "| case | group | expected | observed | seconds |" in text
    assert "| missing file | file | 2 | 2 |" in text and "no such file" in text
