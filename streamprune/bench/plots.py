"""PNG plots of benchmark rows (matplotlib, Agg backend): quality vs budget, cost vs video length."""

from __future__ import annotations

import math
from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#000000", "#aec7e8", "#98df8a", "#ff9896"]


def _save(fig, out_dir, name: str) -> Path:
    """Write the figure as a PNG under out_dir and free it."""
    p = Path(out_dir) / name
    fig.savefig(p, dpi=90)
    _plt().close(fig)
    return p


def _style(method: str, i: int) -> dict:
    main = method.startswith(("subspace", "ours"))  # the method under study ("ours": its old name)
    return {"linestyle": "-" if main else "--", "linewidth": 2.4 if main else 1.4, "marker": "o" if main else ".",
            "color": PALETTE[i % len(PALETTE)], "label": method}


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


QUALITY_PANELS = [("recon_ratio", "reconstruction / SVD bound (1 = optimal, lower better)", True),
                  ("local_recon", "local reconstruction error (lower better)", False),
                  ("needle_tokens", "needle token recall (higher better)", False),
                  ("max_gap_s", "longest uncovered stretch, s (lower better)", False)]


def plot_features_quality(rows: list[dict], out_dir: Path, prefix: str = "features") -> list[Path]:
    """One PNG per stream: 2x2 panels of quality vs budget, one line per method."""
    plt = _plt()
    out = []
    for stream in dict.fromkeys(r["stream"] for r in rows):
        rs = [r for r in rows if r["stream"] == stream]
        methods = list(dict.fromkeys(r["method"] for r in rs))
        fig, axes = plt.subplots(2, 2, figsize=(13, 9))
        for ax, (key, label, logy) in zip(axes.flat, QUALITY_PANELS):
            any_pt = False
            for i, m in enumerate(methods):
                pts = sorted((r["budget"], r.get(key)) for r in rs if r["method"] == m and _finite(r.get(key)))
                if pts:
                    any_pt = True
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], **_style(m, i))
            ax.set_xscale("log", base=2)
            if logy and any_pt:
                ax.set_yscale("log")
            ax.set_title(label, fontsize=10)
            ax.set_xlabel("budget K (tokens kept)")
            ax.grid(True, alpha=0.3)
            if not any_pt:
                ax.text(0.5, 0.5, "not defined for this stream", ha="center", va="center", transform=ax.transAxes)
        r0 = rs[0]
        fig.suptitle(f"{stream}: {r0.get('tokens')} tokens of dim {r0.get('dim')} (rank {r0.get('rank')})", fontsize=12)
        handles, labels = axes.flat[1].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=9)
        fig.tight_layout(rect=(0, 0.07, 1, 0.96))
        p = _save(fig, out_dir, f"{prefix}-quality-{stream}.png")
        out.append(p)
    return out


def plot_features_cost(rows: list[dict], out_dir: Path, prefix: str = "features") -> Path | None:
    """Selection time per block vs position in the stream (longest stream, largest budget) and vs budget."""
    plt = _plt()
    rs = [r for r in rows if r.get("ms_by_position")]
    if not rs:
        return None
    longest = max(rs, key=lambda r: r["tokens"])["stream"]
    rs = [r for r in rs if r["stream"] == longest]
    kmax = max(r["budget"] for r in rs)
    methods = list(dict.fromkeys(r["method"] for r in rs))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 5))
    for i, m in enumerate(methods):
        r = next((r for r in rs if r["method"] == m and r["budget"] == kmax), None)
        if r:
            pos = [(j + 0.5) * 10 for j in range(len(r["ms_by_position"]))]
            a1.plot(pos, r["ms_by_position"], **_style(m, i))
        pts = sorted((r["budget"], r["ms_per_block"]) for r in rs if r["method"] == m and _finite(r.get("ms_per_block")))
        a2.plot([p[0] for p in pts], [p[1] for p in pts], **_style(m, i))
    a1.set_title(f"{longest}, K={kmax}: selection ms per block vs position", fontsize=10)
    a1.set_xlabel("position in stream (% of blocks)")
    a1.set_ylabel("ms per block (push)")
    a1.set_yscale("log")
    a2.set_title(f"{longest}: mean ms per block vs budget", fontsize=10)
    a2.set_xlabel("budget K")
    a2.set_xscale("log", base=2)
    a2.set_yscale("log")
    for a in (a1, a2):
        a.grid(True, alpha=0.3)
    handles, labels = a2.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=9)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return _save(fig, out_dir, f"{prefix}-cost.png")


def plot_scaling(rows: list[dict], out_dir: Path, prefix: str = "scaling") -> Path | None:
    """Prefill time and peak memory vs number of frames: full tokens vs pruned, per preset."""
    plt = _plt()
    if not rows:
        return None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 5))
    series = list(dict.fromkeys((r["preset"], r["mode"]) for r in rows))
    for i, (preset, mode) in enumerate(series):
        rs = sorted((r for r in rows if r["preset"] == preset and r["mode"] == mode), key=lambda r: r["frames"])
        ok = [r for r in rs if r.get("status") == "ok"]
        st = {"linestyle": "-" if mode != "full" else "--", "marker": "o", "color": PALETTE[i % len(PALETTE)],
              "label": f"{preset} {mode}"}
        a1.plot([r["frames"] for r in ok], [r["prefill_s"] for r in ok], **st)
        a2.plot([r["frames"] for r in ok], [r["peak_mb"] for r in ok], **st)
        for r in rs:
            if r.get("status") == "oom":
                for a in (a1, a2):
                    a.axvline(r["frames"], color=st["color"], linestyle=":", alpha=0.6)
                a2.annotate("OOM", (r["frames"], a2.get_ylim()[1] if a2.lines else 0), color=st["color"], fontsize=8)
                break
    a1.set_title("prefill time vs video length (frames)", fontsize=10)
    a1.set_ylabel("seconds")
    a2.set_title("peak tensor memory above the weights (dotted: full tokens ran out of memory)", fontsize=10)
    a2.set_ylabel("MB")
    for a in (a1, a2):
        a.set_xlabel("frames")
        a.set_xscale("log", base=2)
        a.set_yscale("log")
        a.grid(True, alpha=0.3)
    a1.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out_dir, f"{prefix}-cost.png")


def plot_qa(rows: list[dict], out_dir: Path, prefix: str = "qa") -> Path | None:
    """Accuracy relative to the full-token run vs budget, one line per (dataset, method)."""
    plt = _plt()
    rs = [r for r in rows if r.get("budget") not in (None, "full") and _finite(r.get("relative"))]
    if not rs:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, key in enumerate(dict.fromkeys((r["dataset"], r["method"], r.get("streaming", False)) for r in rs)):
        pts = sorted((int(r["budget"]), r["relative"]) for r in rs
                     if (r["dataset"], r["method"], r.get("streaming", False)) == key)
        label = f"{key[0]} {key[1]}" + (" (streaming)" if key[2] else "")
        ax.plot([p[0] for p in pts], [p[1] for p in pts], **{**_style(key[1], i), "label": label})
    ax.set_xscale("log", base=2)
    ax.set_xlabel("visual token budget")
    ax.set_ylabel("accuracy / full-token accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out_dir, f"{prefix}-accuracy.png")
