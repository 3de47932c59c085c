"""bench.hindsight: its gains are the drops of the benchmark's own metrics, event rows span the events, the
front is deterministic, and the CLI rejects bad input in one line."""

import json

import pytest
import torch

from streamprune.bench import hindsight as H
from streamprune.bench import metrics


def _toy(seed=0, n_times=6, per=5, d=6):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n_times * per, d, generator=g, dtype=torch.float64)
    X[3] = 0.0  # a zero row: left out of the local mean, never a useful pick
    times = torch.arange(n_times * per, dtype=torch.float64) // per
    return X, times


@pytest.mark.parametrize("kept", [[], [0, 11], [2, 7, 8, 20, 26]])
def test_local_gains_are_the_drop_of_the_local_metric(kept):
    X, times = _toy()
    window = 1.0
    n_valid = int((X.pow(2).sum(dim=1) > 0).sum())
    base = metrics.local_reconstruction(X, times, torch.tensor(kept, dtype=torch.long), window) if kept else 1.0
    gain = H.local_gains(X, times, kept, window)
    for c in range(X.shape[0]):
        if c in kept:
            assert gain[c] == 0.0
            continue
        after = metrics.local_reconstruction(X, times, torch.tensor(kept + [c]), window)
        assert float(gain[c]) == pytest.approx((base - after) * n_valid, abs=1e-9), c


@pytest.mark.parametrize("kept", [[], [1, 9], [0, 5, 10, 15, 22]])
def test_global_gains_are_the_drop_of_the_residual_energy(kept):
    X, _ = _toy(seed=1)

    def resid(idx):
        if not idx:
            return float(X.pow(2).sum())
        return float(metrics.residual_energy(X, metrics.row_basis(X[idx])).sum())

    gain = H.global_gains(X, kept)
    for c in range(X.shape[0]):
        want = 0.0 if c in kept else resid(kept) - resid(kept + [c])
        assert float(gain[c]) == pytest.approx(want, rel=1e-9, abs=1e-9), c


def test_event_rows_span_each_event():
    g = torch.Generator().manual_seed(2)
    X = torch.randn(40, 16, generator=g, dtype=torch.float64)
    events = []
    for e in range(3):
        ids = torch.arange(10 * e, 10 * e + 6)
        X[ids] = torch.randn(6, 2, generator=g, dtype=torch.float64) @ torch.randn(2, 16, generator=g,
                                                                                     dtype=torch.float64)
        events.append(ids)
    rows = H.event_rows(X, events)
    assert len(rows) == 6
    for ids in events:
        mine = [r for r in rows if r in set(ids.tolist())]
        assert len(mine) == 2
        left = metrics.residual_energy(X[ids], metrics.row_basis(X[mine])).sum()
        assert float(left) < 1e-18 * float(X[ids].pow(2).sum()) + 1e-20


def test_select_keeps_forced_first_and_is_deterministic():
    X, times = _toy(seed=3)
    a = H.hindsight_select(X, times, 7, 1.0, 0.5, forced=[4, 9, 4])
    b = H.hindsight_select(X, times, 7, 1.0, 0.5, forced=[4, 9, 4])
    assert a == b and a[:2] == [4, 9] and len(set(a)) == 7 and 3 not in a
    assert H.hindsight_select(X, times, 1, 1.0, 0.0, forced=[4, 9]) == [4]
    done = []
    H.hindsight_select(X, times, 7, 1.0, 0.5, forced=[4, 9], progress=done.append)
    assert done == [2, 1, 1, 1, 1, 1]  # the forced rows at once, then one per pick: the bar ends at k
    # the local end beats the global end on local error, and the global end wins on recon
    lo = torch.tensor(H.hindsight_select(X, times, 6, 1.0, 0.0))
    hi = torch.tensor(H.hindsight_select(X, times, 6, 1.0, 1e6))
    assert metrics.local_reconstruction(X, times, lo, 1.0) <= metrics.local_reconstruction(X, times, hi, 1.0) + 1e-12
    assert metrics.residual_energy(X, metrics.row_basis(X[hi])).sum() <= \
        metrics.residual_energy(X, metrics.row_basis(X[lo])).sum() + 1e-9


def test_cli_front_and_bad_input(tmp_path, capsys):
    out = tmp_path / "f.json"
    assert H.main(["--stream", "synthetic-d64", "--budget", "8", "--lams", "0,100", "--json", str(out)]) == 0
    pts = json.loads(out.read_text())
    assert [p["lam"] for p in pts] == [0.0, 100.0]
    assert all(p["forced"] == 4 and p["needle_events"] == 1.0 for p in pts)  # 2 events x 2 rows kept first
    assert pts[1]["recon_ratio"] <= pts[0]["recon_ratio"]
    assert "| synthetic-d64 | 8 | 100 |" in capsys.readouterr().out
    assert H.main(["--stream", "synthetic-d64", "--budget", "4", "--lams", "0",
                   "--json", str(tmp_path / "no" / "f.json")]) == 2
    cap = capsys.readouterr()
    assert "| synthetic-d64 | 4 | 0 |" in cap.out and cap.err.strip().count("\n") == 0 and "cannot write" in cap.err
    assert H.main(["--stream", "synthetic-d64", "--budget", "4", "--lams", "0", "--perturb", "2"]) == 0
    assert "| synthetic-d64~p2 | 4 | 0 |" in capsys.readouterr().out  # the realisation judged, by its name
    for bad in (["--lams", "x"], ["--lams", "-1"], ["--lams", "[1]"], ["--budget", "0"], ["--perturb", "-1"]):
        assert H.main(["--stream", "synthetic-d64", *bad]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error:" in err
