"""What any selection of K tokens can reach on a feature stream, with hindsight: local error against global
reconstruction, to tell a goal an online policy misses from a pair of goals no selection seems to meet.

    python -m streamprune.bench.hindsight --stream synthetic-d256 --budget 32 [--lams 0,0.1,1,10,100]
        [--perturb SEED] [--cache out/f0/cache] [--no-events] [--json F]

A Lagrangian greedy that sees the whole stream and knows the benchmark's local window: the event tokens
come first when asked (per needle event, the rows that span its top directions, the first picks of greedy
pivoting on the event's rows: what recon/SVD needs of it), then each pick maximises

    (drop in the summed local error, the metric's own per-token relative residuals) / (non-zero rows)
    + lam x (drop in the global residual energy ||X - P_S X||^2) / ||X||^2,

both exact for the current set (`local_gains`, `global_gains`). `--perturb SEED` runs on the features
suite's perturbed realisation SEED (`bench.features.perturbed`), on which its goals are judged too. Sweeping lam traces pairs (local error,
recon/SVD) from the local end (lam = 0) to the global end; bench.metrics scores every point, as in the
features suite. Greedy is not optimal, so a point outside the goals proves nothing on its own; a front that
stays far from the goals' corner across lam is evidence (not proof) that the corner is out of reach.
One torch thread per process is enough: a d = 256 stream of 8820 tokens takes 0.2-0.3 s per pick.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from torch import Tensor

from ..select.greedy import select_subspace
from .metrics import local_reconstruction, needle_recall, reconstruction_ratio, row_basis

DEFAULT_LAMS = (0.0, 0.01, 0.1, 1.0, 10.0, 100.0)


def local_gains(X: Tensor, times: Tensor, kept: list[int], window: float) -> Tensor:
    """(n,) float64: for each row c, how much adding it to `kept` lowers the sum over rows of the local
    relative residual (bench.metrics.local_reconstruction's terms): for every time u within +-window of c's,
    sum_{i at u} (x_i . c')^2 / (||x_i||^2 ||c'||^2), c' = c minus its projection on the kept rows within
    +-window of u. Kept rows gain nothing."""
    X = X.double()
    n = X.shape[0]
    Xh = torch.nn.functional.normalize(X, dim=1)  # (n, d); zero rows stay zero
    kt = times[kept] if kept else times.new_zeros(0)
    gain = torch.zeros(n, dtype=torch.float64)
    for u in times.unique().tolist():
        rows = (times == u).nonzero().reshape(-1)
        cand = ((times - u).abs() <= window).nonzero().reshape(-1)
        C = X[cand]  # (m, d)
        near = [kept[j] for j in ((kt - u).abs() <= window).nonzero().reshape(-1).tolist()]
        if near:
            B = row_basis(X[near])  # (d, r), the metric's own basis of the window's kept rows
            C = C - (C @ B) @ B.T
        cn = C.pow(2).sum(dim=1)  # (m,)
        ok = cn > 1e-20 * X[cand].pow(2).sum(dim=1).clamp_min(1e-300)
        g = (Xh[rows] @ C.T).pow(2).sum(dim=0) / cn.clamp_min(1e-300)  # (m,)
        gain[cand] += torch.where(ok, g, 0.0)
    if kept:
        gain[kept] = 0.0
    return gain


def global_gains(X: Tensor, kept: list[int]) -> Tensor:
    """(n,) float64: for each row c, how much adding it to `kept` lowers ||X - P_S X||_F^2:
    ||R c'||^2 / ||c'||^2 with R the residual of X and c' that of c against the kept rows' span."""
    X = X.double()
    R = X - (X @ (B := row_basis(X[kept]))) @ B.T if kept else X  # (n, d)
    G = R.T @ R  # (d, d)
    cn = R.pow(2).sum(dim=1)
    ok = cn > 1e-20 * X.pow(2).sum(dim=1).clamp_min(1e-300)
    gain = torch.where(ok, ((R @ G) * R).sum(dim=1) / cn.clamp_min(1e-300), 0.0)
    if kept:
        gain[kept] = 0.0
    return gain


def event_rows(X: Tensor, events, per_event: int = 2) -> list[int]:
    """Per event (ids of its rows), `per_event` of them in greedy residual order (`select_subspace` on the
    event's rows: the rows that span its top directions)."""
    return [int(e[j]) for e in events for j in select_subspace(X[e], per_event).tolist()]


def hindsight_select(X: Tensor, times: Tensor, k: int, window: float, lam: float,
                     forced: list[int] = (), progress=None) -> list[int]:
    """k row indices: `forced` first (at most k), then the Lagrangian greedy of the module docstring.
    progress(m): called with the number of rows just added."""
    X = X.double()
    n = X.shape[0]
    valid = max(1, int((X.pow(2).sum(dim=1) > 0).sum()))
    energy = float(X.pow(2).sum()) or 1.0
    kept = list(dict.fromkeys(int(i) for i in forced))[:k]
    if progress is not None and kept:
        progress(len(kept))
    while len(kept) < min(k, n):
        score = local_gains(X, times, kept, window) / valid
        if lam:
            score = score + lam * global_gains(X, kept) / energy
        score[kept] = -math.inf
        kept.append(int(score.argmax()))
        if progress is not None:
            progress(1)
    return kept


def front(stream, k: int, lams=DEFAULT_LAMS, events: bool = True, progress=None) -> list[dict]:
    """One point per lam: the selection's local error, recon/SVD and needle event recall (bench.metrics, as
    the features suite scores them)."""
    forced = event_rows(stream.X, stream.events) if events and stream.events else []
    out = []
    for lam in lams:
        kept = hindsight_select(stream.X, stream.times, k, stream.window, float(lam), forced, progress)
        idx = torch.tensor(kept)
        out.append({"stream": stream.name, "budget": k, "lam": float(lam), "forced": len(forced[:k]),
                    "local_recon": local_reconstruction(stream.X, stream.times, idx, stream.window),
                    "recon_ratio": reconstruction_ratio(stream.X, idx, stream.s2),
                    "needle_events": needle_recall(idx, stream.events)[0] if stream.events else math.nan})
    return out


def main(argv=None) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from .features import DEFAULT_STREAMS, QUICK_STREAMS, load_stream

    specs = {**DEFAULT_STREAMS, **QUICK_STREAMS}
    ap = argparse.ArgumentParser(prog="python -m streamprune.bench.hindsight", description=__doc__.split("\n")[0])
    ap.add_argument("--stream", default="synthetic-d256", choices=sorted(specs))
    ap.add_argument("--budget", type=int, default=32)
    ap.add_argument("--lams", default=",".join(str(v) for v in DEFAULT_LAMS))
    ap.add_argument("--perturb", type=int, default=0, help="the perturbed realisation SEED >= 1 (0: as built)")
    ap.add_argument("--cache", default=None, help="the features suite's stream cache folder (else built here)")
    ap.add_argument("--no-events", action="store_true", help="do not keep the needle events' rows first")
    ap.add_argument("--json", default=None, help="also write the points to this file")
    a = ap.parse_args(argv)
    err = Console(stderr=True)
    try:
        lams = [float(v) for v in a.lams.split(",") if v.strip()]
    except ValueError:
        lams = []
    if not lams or any(not math.isfinite(v) or v < 0 for v in lams):
        err.print(f"error: --lams must be comma-separated numbers >= 0, got {a.lams!r}", markup=False,
                  soft_wrap=True)
        return 2
    if a.budget < 1 or a.perturb < 0:
        err.print(f"error: --budget must be >= 1 and --perturb >= 0, got {a.budget} and {a.perturb}",
                  markup=False, soft_wrap=True)
        return 2
    torch.set_num_threads(1)
    try:
        stream = load_stream(a.stream, specs[a.stream], Path(a.cache) if a.cache else None, a.perturb)
        with Progress(console=err, transient=True) as bar:
            task = bar.add_task(f"{a.stream} K={a.budget}", total=len(lams) * min(a.budget, stream.X.shape[0]))
            pts = front(stream, a.budget, lams, events=not a.no_events, progress=lambda m: bar.advance(task, m))
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    print("| stream | K | lam | event rows kept first | local err | recon/SVD | needle events |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for p in pts:
        print(f"| {p['stream']} | {p['budget']} | {p['lam']:g} | {p['forced']} | {p['local_recon']:.4g} | "
              f"{p['recon_ratio']:.4g} | {p['needle_events']:.2f} |")
    if a.json:
        try:
            Path(a.json).write_text(json.dumps(pts, indent=1))
        except OSError as e:  # the table above is already out
            err.print(f"error: cannot write {a.json}: {e.strerror or e}", markup=False, soft_wrap=True)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
