"""Project-wide test settings."""

import os

import pytest
import torch

# One intra-op thread: the tiny models' forwards are dominated by thread hand-off on a 2-core shared
# machine (about 20x slower with 2 threads under load). Tests that measure nothing about threading
# are unaffected in what they assert.
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


@pytest.fixture
def count_calls(monkeypatch):
    """count_calls(owner, name) -> a dict whose "n" counts the calls of owner.name from then on (owner: a
    module, class or instance; the original still runs; monkeypatch undoes it after the test)."""

    def patch(owner, name: str) -> dict:
        real, calls = getattr(owner, name), {"n": 0}

        def counted(*a, **kw):
            calls["n"] += 1
            return real(*a, **kw)

        monkeypatch.setattr(owner, name, counted)
        return calls

    return patch
