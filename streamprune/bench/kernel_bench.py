"""Greedy-selection kernel benchmark: select_subspace against k matrix-vector products of the same shape.

    python -m streamprune.bench.kernel_bench [--quick] [--reps 3] [--out bench/RESULTS-kernel.md] [--json F]
                                             [--jsonl PARTS] [--only n,d,k ...] [--device cpu]

For every (n, d, k) of the grid (k < n) and Gaussian X (n, d): time of k products A @ v (n x d, fresh v
each; "hot": one A, which stays in the cache when it fits; "cold": A cycled among copies that together
exceed the largest cache, so every product streams A from memory), of the previous select_subspace
(_select_subspace_reference: three passes over the residual and two host syncs per pick) and of the
current one, interleaved, `--reps` repetitions (more for cheap shapes), minimum kept. CPU: CPU time
(time.thread_time) with one torch thread; CUDA: wall time between device synchronizations. Host syncs are
counted (first repetition) by streamprune.bench.syncs.count_syncs. Where the two pick orders differ, the
float64 residual energies of the two rows at the first difference are compared (a near tie: the relative
gap is below float32 resolution).

For the bench protocol (the select suite runs these): `kernel_units(quick)` lists one params dict per
shape, `kernel_row(params)` measures one shape and returns its row; `markdown(rows, ...)` is the table.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

from streamprune.bench.syncs import count_syncs
from streamprune.select.greedy import ZERO_TOL, check_k, check_matrix, check_weights, greedy_residual, select_subspace

__all__ = ["GOAL", "GRID", "QUICK", "count_syncs", "kernel_row", "kernel_units", "markdown", "main"]

GRID = {"n": (2000, 4096, 20000), "d": (768, 1536, 3584), "k": (64, 256, 1024)}
QUICK = {"n": (2000, 4096), "d": (768, 1536), "k": (64, 256, 1024)}
GOAL = 1.5  # select_subspace time / (k matvec time)
MAX_REPS, SMALL_CASE_S = 15, 2.0  # cheap shapes repeat (up to MAX_REPS) until SMALL_CASE_S has passed
COLD_BYTES = 96 << 20  # the cold yardstick cycles A among copies totalling at least this (> L3; > H200 L2)
TIE = 1e-5  # relative float64 energy gap below which two picks are a near tie for float32 arithmetic


def _select_subspace_reference(X: Tensor, k: int, weights: Tensor | None = None) -> Tensor:
    """select_subspace before the one-pass rewrite (right-looking greedy_residual rounds), for timing."""
    X = check_matrix(X)
    n = X.shape[0]
    k = min(check_k(k), n)
    A = X if weights is None else X * check_weights(weights, n, X.device).sqrt()[:, None]  # (n, d)
    norms = A.pow(2).sum(dim=1)  # (n,)
    top = float(norms.max()) if n else 0.0
    zero = ZERO_TOL * top
    alive = (norms > zero).nonzero().reshape(-1)
    out: list[Tensor] = []
    got = 0
    while got < k and alive.numel():
        R = A[alive].clone()
        picks, _, _ = greedy_residual(R, k - got, zero_energy=zero)
        if picks.numel() == 0:
            break
        out.append(alive[picks])
        got += picks.numel()
        keep = torch.ones(alive.numel(), dtype=torch.bool, device=A.device)
        keep[picks] = False
        alive = alive[keep]
    if got < k:
        used = torch.zeros(n, dtype=torch.bool, device=A.device)
        for o in out:
            used[o] = True
        out.append((~used).nonzero().reshape(-1)[: k - got])
    if not out:
        return torch.zeros(0, dtype=torch.long, device=A.device)
    return torch.cat(out)


def _matvecs(As: list[Tensor], V: Tensor, y: Tensor):
    for t, v in enumerate(V.unbind(0)):
        torch.mv(As[t % len(As)], v, out=y)


def _timer(device: torch.device):
    if device.type == "cuda":
        def timed(f) -> float:
            torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            f()
            torch.cuda.synchronize(device)
            return time.perf_counter() - t0
        return timed, "wall time between cuda synchronizations"

    def cpu_timed(f) -> float:
        t0 = time.thread_time()
        f()
        return time.thread_time() - t0
    return cpu_timed, "CPU time (time.thread_time)"


def _first_difference(a: list, b: list) -> int | None:
    for t, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return t
    return None if len(a) == len(b) else min(len(a), len(b))


def _tie_gap(X: Tensor, picks: list, t: int, j_before: int, j_after: int) -> float:
    """Relative float64 gap (e_before - e_after) / max e between the residual energies of the two rows picked
    at step t (same picks before t), residuals against the round's earlier picks (rounds of d for full rank)."""
    A = X.double()  # (n, d)
    n, d = A.shape
    r0 = (t // d) * d if n > d else 0
    R = A
    if t > r0:
        Qb = torch.linalg.qr(A[picks[r0:t]].T).Q  # (d, t - r0)
        R = A - (A @ Qb) @ Qb.T
    e = (R * R).sum(dim=1)  # (n,)
    e[picks[:t]] = -1.0
    return float((e[j_before] - e[j_after]) / e.max().clamp_min(1e-300))


def kernel_units(quick: bool = False, reps: int = 3, device: str = "cpu", threads: int = 1) -> list[dict]:
    """One params dict per (n, d, k) of the grid with k < n: {"n", "d", "k", "reps", "seed", "device",
    "threads"}; the quick grid's shapes first, then n = 20000 at d = 1536, then the rest (cheap first)."""
    grid = QUICK if quick else GRID
    shapes = [(n, d, k) for n in grid["n"] for d in grid["d"] for k in grid["k"] if k < n]
    if not quick:
        q = {(n, d, k) for n in QUICK["n"] for d in QUICK["d"] for k in QUICK["k"]}
        shapes.sort(key=lambda s: (s not in q, not (s[0] == 20000 and s[1] == 1536), s[0] * s[1] * s[2]))
    return [{"n": n, "d": d, "k": k, "reps": int(reps), "seed": 0, "device": device, "threads": threads}
            for n, d, k in shapes]


def kernel_row(params: dict) -> dict:
    """Measure one shape (params from kernel_units; missing keys take their defaults): min times over
    interleaved repetitions, ratios to the k-matvec yardsticks, host syncs per call and per pick (counted in
    the first repetition), pick agreement before/after (and the float64 gap at the first difference)."""
    n, d, k = int(params["n"]), int(params["d"]), int(params["k"])
    reps, seed = max(1, int(params.get("reps", 3))), int(params.get("seed", 0))
    device = torch.device(params.get("device") or "cpu")
    threads = params.get("threads", 1)
    saved_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        g = torch.Generator().manual_seed(seed)
        X = torch.randn(n, d, generator=g).to(device)  # (n, d)
        V = torch.randn(k, d, generator=g).to(device)  # (k, d)
        y = torch.empty(n, device=device)
        copies = max(1, math.ceil(COLD_BYTES / (4 * n * d)))
        cold = [X] + [X.clone() for _ in range(copies - 1)]
        timed, clock = _timer(device)
        times = {"matvec": [], "cold": [], "before": [], "after": []}
        syncs, outs = {}, {}
        rep, t0 = 0, time.perf_counter()
        while rep < reps or (rep < MAX_REPS and time.perf_counter() - t0 < SMALL_CASE_S):  # more if cheap
            times["matvec"].append(timed(lambda: _matvecs([X], V, y)))
            if copies > 1:
                times["cold"].append(timed(lambda: _matvecs(cold, V, y)))
            for name, f in (("before", _select_subspace_reference), ("after", select_subspace)):
                if rep == 0:
                    with count_syncs() as cnt:
                        times[name].append(timed(lambda: outs.__setitem__(name, f(X, k))))
                    syncs[name] = cnt["total"]
                else:
                    times[name].append(timed(lambda: outs.__setitem__(name, f(X, k))))
            rep += 1
        cold = None  # free the copies before the float64 tie check
        tm = {key: min(v) for key, v in times.items() if v}
        tm.setdefault("cold", tm["matvec"])  # A alone exceeds COLD_BYTES: the hot loop streams it already
        before, after = outs["before"].tolist(), outs["after"].tolist()
        first = _first_difference(before, after)
        gap = None
        if first is not None and first < min(len(before), len(after)):
            gap = _tie_gap(X.cpu(), before, first, before[first], after[first])
        return {"n": n, "d": d, "k": k, "reps": rep, "device": str(device), "threads": torch.get_num_threads(),
                "clock": clock, "cold_copies": copies,
                "matvec_s": tm["matvec"], "matvec_cold_s": tm["cold"], "before_s": tm["before"],
                "after_s": tm["after"], "ratio_before": tm["before"] / tm["matvec"],
                "ratio_after": tm["after"] / tm["matvec"], "ratio_after_cold": tm["after"] / tm["cold"],
                "matvec_gbs": 4.0 * n * d * k / tm["matvec"] / 1e9,
                "matvec_cold_gbs": 4.0 * n * d * k / tm["cold"] / 1e9, "speedup": tm["before"] / tm["after"],
                "syncs_before": syncs["before"], "syncs_after": syncs["after"],
                "syncs_per_pick_before": syncs["before"] / k, "syncs_per_pick_after": syncs["after"] / k,
                "same_picks": before == after, "first_difference": first, "tie_gap": gap,
                "same_set": sorted(before) == sorted(after)}
    finally:
        torch.set_num_threads(saved_threads)


def run(quick: bool = False, reps: int = 3, *, device: str = "cpu", only=None, jsonl: Path | None = None,
        log=sys.stderr) -> dict:
    """All rows of the grid (or the `only` shapes); each row is appended to `jsonl` as it is measured, and
    shapes already there are skipped (resume)."""
    units = kernel_units(quick, reps, device)
    if only:
        units = [{**units[0], "n": n, "d": d, "k": k} for n, d, k in only]
    rows = []
    if jsonl is not None and Path(jsonl).exists():
        rows = [json.loads(line) for line in Path(jsonl).read_text().splitlines() if line.strip()]
    done = {(r["n"], r["d"], r["k"]) for r in rows}
    for u in units:
        if (u["n"], u["d"], u["k"]) in done:
            continue
        t0 = time.perf_counter()
        r = kernel_row(u)
        rows.append(r)
        if jsonl is not None:
            Path(jsonl).parent.mkdir(parents=True, exist_ok=True)
            with open(jsonl, "a") as f:
                f.write(json.dumps(r) + "\n")
        print(f"n={r['n']} d={r['d']} k={r['k']}: matvec {r['matvec_s']:.3f}s (cold {r['matvec_cold_s']:.3f}s) "
              f"before {r['before_s']:.3f}s ({r['ratio_before']:.2f}x) after {r['after_s']:.3f}s "
              f"({r['ratio_after']:.2f}x, cold {r['ratio_after_cold']:.2f}x) syncs/pick "
              f"{r['syncs_per_pick_before']:.3f} -> {r['syncs_per_pick_after']:.3f} same={r['same_picks']} "
              f"[{time.perf_counter() - t0:.0f}s]", file=log, flush=True)
    rows.sort(key=lambda r: (r["n"], r["d"], r["k"]))
    return {"machine": machine(), "quick": quick, "reps": reps, "goal": GOAL, "rows": rows}


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": _cpu_name(), "torch": torch.__version__, "threads": 1}


def _cpu_name() -> str:
    import os

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{os.cpu_count()} x {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return platform.machine()


def _same(r: dict) -> str:
    if r["same_picks"]:
        return "yes"
    s = f"from pick {r['first_difference']}"
    if r.get("tie_gap") is not None:
        s += f" (float64 gap {abs(r['tie_gap']):.0e}{', near tie' if abs(r['tie_gap']) < TIE else ''})"
    return s + (", same set" if r["same_set"] else "")


def markdown(rows: list[dict], command: str = "", mach: dict | None = None, reps: int = 3,
             title: str = "# select_subspace kernel: time against k matrix-vector products") -> str:
    """The kernel table (title, how it was measured, summary line, one row per shape)."""
    if not rows:
        return title + "\n\nNo rows.\n"
    m = mach or machine()
    ra = [r["ratio_after"] for r in rows]
    rc = [r["ratio_after_cold"] for r in rows]
    rb = [r["ratio_before"] for r in rows]
    dev = rows[0].get("device", "cpu")
    clock = rows[0].get("clock", "CPU time (time.thread_time)")
    miss = [f"{r['n']}/{r['d']}/{r['k']}" for r in rows if r["ratio_after"] > GOAL]
    lines = [title, ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [
        f"Machine: {m['cpus']}, {m['platform']}, torch {m['torch']}, device {dev}, torch.set_num_threads("
        f"{rows[0].get('threads', 1)}); other work shared the 2 cores during the run. {clock} of one call; "
        "matvec = k products torch.mv(A, v) of one (n, d) float32 matrix (hot: the same A every time, which "
        "stays in the L3 cache when it fits); cold = the same k products cycling through copies of A that "
        f"together exceed {COLD_BYTES >> 20} MB, so each product streams A from memory (A >= that alone: cold = "
        "hot). before = previous select_subspace (right-looking greedy_residual: R @ q, rank-1 update of R, "
        "row norms per pick, two host syncs per pick), after = current (one pass over A per pick: c = W q, "
        f"energy downdates, exact recheck on drift). {reps} (up to {MAX_REPS} for shapes cheaper than "
        f"{SMALL_CASE_S:g} s) interleaved repetitions, minimum kept. Gaussian X, seed 0. "
        f"Goal: after / matvec (hot) <= {GOAL}.",
        "",
        f"Ratios: before {min(rb):.2f}-{max(rb):.2f}x, after {min(ra):.2f}-{max(ra):.2f}x of k hot matvecs "
        f"({min(rc):.2f}-{max(rc):.2f}x of cold); {sum(r <= GOAL for r in ra)}/{len(ra)} shapes within the "
        f"goal{' (misses n/d/k: ' + ', '.join(miss) + ')' if miss else ''}. Host syncs per call (counted): "
        f"before {min(r['syncs_before'] for r in rows)}-{max(r['syncs_before'] for r in rows)} "
        f"({min(r['syncs_per_pick_before'] for r in rows):.2f}-{max(r['syncs_per_pick_before'] for r in rows):.2f}"
        f" per pick), after {min(r['syncs_after'] for r in rows)}-{max(r['syncs_after'] for r in rows)} "
        f"({min(r['syncs_per_pick_after'] for r in rows):.3f}-{max(r['syncs_per_pick_after'] for r in rows):.3f} "
        "per pick; whole call, input checks included). Same pick order as before: "
        f"{sum(r['same_picks'] for r in rows)}/{len(rows)} shapes (where not: the float64 gap between the two "
        f"rows at the first difference; below {TIE:g} = a near tie, past float32 resolution).",
        "",
        "| n | d | k | reps | k matvec s (hot) | cold s | before s | after s | before / matvec | after / matvec | "
        "after / cold | matvec GB/s hot / cold | speedup | syncs before (per pick) | syncs after (per pick) | "
        "same picks |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['n']} | {r['d']} | {r['k']} | {r['reps']} | {r['matvec_s']:.3f} | {r['matvec_cold_s']:.3f} | "
                     f"{r['before_s']:.3f} | {r['after_s']:.3f} | {r['ratio_before']:.2f} | "
                     f"{'**' if r['ratio_after'] > GOAL else ''}{r['ratio_after']:.2f}"
                     f"{'**' if r['ratio_after'] > GOAL else ''} | {r['ratio_after_cold']:.2f} | "
                     f"{r['matvec_gbs']:.1f} / {r['matvec_cold_gbs']:.1f} | {r['speedup']:.2f} | "
                     f"{r['syncs_before']} ({r['syncs_per_pick_before']:.2f}) | "
                     f"{r['syncs_after']} ({r['syncs_per_pick_after']:.3f}) | {_same(r)} |")
    return "\n".join(lines) + "\n"


def _shape(text: str) -> tuple[int, int, int]:
    try:
        n, d, k = (int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected n,d,k, got {text!r}") from None
    if min(n, d, k) <= 0 or k >= n:
        raise argparse.ArgumentTypeError(f"need positive n, d, k with k < n, got {text!r}")
    return n, d, k


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(prog="python -m streamprune.bench.kernel_bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help=f"grid {QUICK} instead of {GRID}")
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions (minimum kept)")
    p.add_argument("--only", type=_shape, nargs="+", default=None, metavar="N,D,K", help="just these shapes")
    p.add_argument("--device", default="cpu", help="torch device (cuda: wall time between synchronizations)")
    p.add_argument("--out", default=None, help="write the markdown table here (e.g. bench/RESULTS-kernel.md)")
    p.add_argument("--json", default=None, help="write the raw results as JSON here")
    p.add_argument("--jsonl", default=None, help="append each row here as measured; rows already there are reused")
    args = p.parse_args(argv)
    res = run(args.quick, max(1, args.reps), device=args.device, only=args.only,
              jsonl=Path(args.jsonl) if args.jsonl else None)
    text = markdown(res["rows"], "python -m streamprune.bench.kernel_bench " + " ".join(argv), res["machine"],
                    max(1, args.reps))
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
