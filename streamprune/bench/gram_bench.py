"""The question stage from the memory's Gram (select.gram) against the row kernel, and what keeping the Gram
costs the push: the select suite's `gram` part.

    python -m streamprune.bench.gram_bench [--quick] [--parts question,push] [--json F]

question_units / question_row: a memory of m = 4k tokens of dimension d; `final(k, relevance)`'s selection
(resprune, alpha 0.3; also spare, and "none" = the question-agnostic greedy) by the row kernel (relevance.question_select on the m x d tokens) and by the Gram path
(gram.gram_question_select on a slot-indexed (K + 256)^2 Gram read through the memory's slots, no gather),
interleaved, CPU time (time.thread_time, one torch thread), minimum over the repetitions; same picks or the
first differing pick; whether the exact row finish ran. Data: "gauss" (Gaussian tokens, row scales
log-normal: every pick from Cholesky energies) or "decay" (singular values 1 .. 1e-12: the Cholesky energies
fall below gram.GRAM_TOL x top and the row kernel finishes).

push_units / push_row: three StreamingSelectors on the same blocks, interleaved block by block: question_gram
off, on with gram_refresh="push" (each push refreshes the rows of the tokens it kept) and on with
gram_refresh="question" (the first question after pushes refreshes them); ms per block once the memory is
full (mean and max), tokens kept per push (each costs a Gram row), the question-time refresh of the "question"
engine after the timed blocks (memory_gram: refresh + gather), and the bytes held.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from ..select import StreamingSelector, question_select
from ..select.gram import gram_question_select

PARTS = ("question", "push")


def question_units(quick: bool) -> list[dict]:
    units = []
    for d in (1536, 3584):
        for k in (256, 1024):
            if quick and k == 1024 and d == 3584:
                continue
            units.append({"data": "gauss", "d": d, "k": k, "m": 4 * k, "reps": 2 if k == 1024 else 3})
    units.append({"data": "gauss", "d": 3584, "k": 1024, "m": 4096, "reps": 2, "mode": "spare"})
    units.append({"data": "gauss", "d": 3584, "k": 1024, "m": 4096, "reps": 2, "mode": "none"})
    units.append({"data": "decay", "d": 1536, "k": 256, "m": 1024, "reps": 3})
    units.append({"data": "gauss", "d": 1536, "k": 128, "m": 512, "reps": 3})  # 3 MiB of tokens: below GRAM_MIN_BYTES
    return units


def _memory(data: str, m: int, d: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    if data == "gauss":
        X = torch.randn(m, d, generator=g) * torch.exp(0.5 * torch.randn(m, 1, generator=g))
    elif data == "decay":
        U = torch.linalg.qr(torch.randn(m, min(m, d), generator=g)).Q
        V = torch.linalg.qr(torch.randn(d, min(m, d), generator=g)).Q
        X = (U * torch.logspace(0, -12, min(m, d))) @ V.T * 30
    else:
        raise ValueError(f"unknown data {data!r} (gauss, decay)")
    r = torch.rand(m, generator=g).clamp(0.01, 1.0)
    return X.contiguous(), r


def _clock(device: torch.device):
    """CPU time of this thread on the CPU; wall time between device syncs elsewhere."""
    if device.type == "cpu":
        return time.thread_time

    def wall():
        torch.cuda.synchronize(device) if device.type == "cuda" else None
        return time.perf_counter()
    return wall


def question_row(p: dict) -> dict:
    torch.set_num_threads(1)
    m, d, k, reps = int(p["m"]), int(p["d"]), int(p["k"]), int(p.get("reps", 3))
    dev = torch.device(p.get("device") or "cpu")
    clock = _clock(dev)
    X, r = _memory(p["data"], m, d)
    X, r = X.to(dev), r.to(dev)
    cap = m + 256  # the selector's slot count at a full memory (K + min(block, K))
    slots = torch.randperm(cap, generator=torch.Generator().manual_seed(1))[:m].to(dev)  # memory order -> slot
    Xs = torch.zeros(cap, d, device=dev)
    Xs[slots] = X
    t0 = clock()
    Gs = Xs @ Xs.T  # (cap, cap): what the selector holds
    build = clock() - t0
    mode = p.get("mode", "resprune")

    def row():
        return question_select(X, k, r, mode=mode, alpha=0.3)

    stats: dict = {}

    def gram():  # as StreamingSelector.final: the slot-indexed Gram read through the memory's slots
        stats.clear()
        return gram_question_select(X, Gs, k, r, mode=mode, alpha=0.3, index=slots, stats=stats)

    best = {"row": math.inf, "gram": math.inf}
    out = {}
    for i in range(reps):
        for name, fn in (("row", row), ("gram", gram)) if i % 2 == 0 else (("gram", gram), ("row", row)):
            t0 = clock()
            out[name] = fn()
            best[name] = min(best[name], clock() - t0)
    diff = (out["row"] != out["gram"]).nonzero().reshape(-1)
    same = "yes"
    if diff.numel():  # the float64 gap between the two rows at the first difference (a near tie or not)
        i = int(diff[0])
        A = X.double() * r.double().pow(0.3).sqrt()[:, None]
        Q = torch.linalg.qr(A[out["row"][:i]].T).Q
        R = A[torch.stack([out["row"][i], out["gram"][i]])]
        e = (R - (R @ Q) @ Q.T).pow(2).sum(dim=1)
        same = f"from pick {i} (float64 gap {float((e[0] - e[1]).abs() / e.max()):.0e})"
    return {"device": str(dev), "data": p["data"], "mode": mode, "m": m, "d": d, "k": k, "reps": reps, "row_ms": 1e3 * best["row"],
            "gram_ms": 1e3 * best["gram"], "speedup": best["row"] / max(best["gram"], 1e-9),
            "same_picks": same,
            "row_finish_calls": stats.get("row_finishes", 0), "cholesky_picks": stats.get("cholesky_picks", k), "gram_build_ms": 1e3 * build,
            "gram_mb": 4 * cap * cap / 2**20}


def push_units(quick: bool) -> list[dict]:
    return [{"stream": s, "d": d, "K": K, "n": 256, "measure": 4 if quick else 10}
            for s in ("hard", "lowrank") for d in (1536, 3584) for K in (1024, 4096)
            if not (quick and (K == 4096 and d == 3584))]


def _push_blocks(stream: str, d: int, n: int, count: int):
    if stream == "hard":  # Gaussian blocks, as push_bench's "hard" stream
        g = torch.Generator().manual_seed(0)
        return [(float(b), torch.randn(n, d, generator=g)) for b in range(count)]
    if stream == "lowrank":
        from .streams import synthetic_stream

        return list(synthetic_stream(count, n, d, rank=16, needles=0, scene_len=10, noise=0.1, drift=0.05, seed=0))
    raise ValueError(f"unknown stream {stream!r} (hard, lowrank)")


def push_row(p: dict) -> dict:
    """Gram off / on on the same blocks, interleaved block by block; steady state once the memory is full."""
    torch.set_num_threads(1)
    K, n, d, measure = int(p["K"]), int(p["n"]), int(p["d"]), int(p["measure"])
    dev = torch.device(p.get("device") or "cpu")
    clock = _clock(dev)
    fill = math.ceil(K / n) + 2
    blocks = [(t, x.to(dev)) for t, x in _push_blocks(p["stream"], d, n, fill + measure)]
    sels = {"off": StreamingSelector(K, question_gram=False, device=dev),
            "on": StreamingSelector(K, question_gram=True, gram_refresh="push", device=dev),
            "lazy": StreamingSelector(K, question_gram=True, gram_refresh="question", device=dev)}
    ms = {e: [] for e in sels}
    stored = []
    names = list(sels)
    for b, (t, x) in enumerate(blocks):
        if b == fill:  # the lazy engine's Gram is current when the timed blocks start
            sels["lazy"].gram_view()
        for e in names[b % 3:] + names[: b % 3]:
            before = sels[e].tokens_seen
            ids_before = set(sels[e].memory.ids.tolist()) if e == "on" and b >= fill else None
            t0 = clock()
            sels[e].push(x, t)
            ms[e].append(1e3 * (clock() - t0))
            if ids_before is not None:
                stored.append(int((sels[e].memory.ids >= before).sum()))
    on, lazy = sels["on"], sels["lazy"]
    same = torch.equal(sels["off"].memory.ids, on.memory.ids) and torch.equal(on.memory.ids, lazy.memory.ids)
    t0 = clock()
    lazy.gram_view()
    lazy_refresh = 1e3 * (clock() - t0)
    t0 = clock()
    on.gram_view()
    gather = 1e3 * (clock() - t0)
    steady = {e: v[fill:] for e, v in ms.items()}
    M = on.memory.tokens
    err = float((on.memory_gram().double() - M.double() @ M.double().T).abs().max() / (M.double() @ M.double().T).abs().max())
    return {"device": str(dev), "stream": p["stream"], "d": d, "K": K, "n": n, "blocks_timed": measure,
            "off_ms": sum(steady["off"]) / measure, "on_ms": sum(steady["on"]) / measure,
            "off_max_ms": max(steady["off"]), "on_max_ms": max(steady["on"]),
            "added_ms": (sum(steady["on"]) - sum(steady["off"])) / measure,
            "lazy_ms": sum(steady["lazy"]) / measure, "lazy_refresh_ms": lazy_refresh, "gather_ms": gather,
            "stored_per_push": sum(stored) / max(1, len(stored)), "same_memory": same,
            "gram_mb": (on.buffer_bytes() - sels["off"].buffer_bytes()) / 2**20,  # the Gram and its refresh mask
            "held_mb_off": sels["off"].buffer_bytes() / 2**20, "held_mb_on": on.buffer_bytes() / 2**20,
            "gram_rel_err": err}


def run(p: dict) -> dict:
    return question_row(p) if p["kind"] == "question" else push_row(p)


def units(quick: bool, parts=PARTS) -> list[dict]:
    out = []
    if "question" in parts:
        out += [{"kind": "question", **u} for u in question_units(quick)]
    if "push" in parts:
        out += [{"kind": "push", **u} for u in push_units(quick)]
    return out


def _f(v):
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|"]
    return "\n".join(lines + ["| " + " | ".join(_f(v) for v in r) + " |" for r in rows])


def report(rows: list[dict]) -> str:
    out = []
    q = [r for r in rows if "row_ms" in r]
    if q:
        out += ["### question stage: final(k, relevance) selection, m = 4k, row kernel vs Gram (same run, interleaved)",
                "", _table(["data", "mode", "m", "d", "k", "row kernel ms", "Gram ms", "speedup",
                            "same picks", "row finishes", "Cholesky picks", "Gram MB (K+256)^2", "Gram rebuild ms",
                            "speedup incl. a full rebuild"],
                           [[r["data"], r.get("mode", "resprune"), r["m"], r["d"], r["k"], r["row_ms"], r["gram_ms"], r["speedup"],
                             r["same_picks"], r["row_finish_calls"], r["cholesky_picks"], r["gram_mb"], r["gram_build_ms"],
                             r["row_ms"] / (r["gram_ms"] + r["gram_build_ms"])] for r in q])]
    p = [r for r in rows if "off_ms" in r]
    if p:
        out += ["", "### push with the Gram kept (question_gram on) vs off: ms per block once the memory is full",
                "", _table(["stream", "d", "K", "n", "off ms", "on (push) ms", "added ms", "off max", "on max",
                            "kept/push", "on (question) ms", "its refresh at the question ms", "view ms",
                            "Gram MB", "held MB off", "held MB on", "same memory", "Gram rel. err"],
                           [[r["stream"], r["d"], r["K"], r["n"], r["off_ms"], r["on_ms"], r["added_ms"],
                             r["off_max_ms"], r["on_max_ms"], r["stored_per_push"], r["lazy_ms"],
                             r["lazy_refresh_ms"], r["gather_ms"], r["gram_mb"], r["held_mb_off"],
                             r["held_mb_on"], r["same_memory"], r["gram_rel_err"]] for r in p])]
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--json", default=None)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    parts = [s for s in a.parts.split(",") if s]
    bad = [s for s in parts if s not in PARTS]
    if bad:
        ap.error(f"unknown part {bad[0]!r}; known: {', '.join(PARTS)}")
    rows = []
    for u in units(a.quick, parts):
        u = {**u, "device": a.device}
        t0 = time.perf_counter()
        rows.append(run(u))
        print(f"[gram] {u}: {time.perf_counter() - t0:.1f} s", flush=True, file=__import__("sys").stderr)
    print(f"device {a.device}: CPU time (time.thread_time) on the CPU, wall time between syncs elsewhere; one "
          "torch thread, minimum over interleaved repetitions; other work shared the cores.\n")
    print(report(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
