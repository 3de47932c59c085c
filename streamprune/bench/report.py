"""Terminal tables (rich, stdout) and Markdown tables for benchmark rows."""

from __future__ import annotations

import math
import sys

from rich.console import Console
from rich.table import Table

# suite -> [(row key, header, format)]
COLUMNS = {
    "features": [("stream", "stream", "s"), ("method", "method", "s"), ("budget", "K", "d"), ("kept", "kept", "d"),
                 ("recon_ratio", "recon/SVD", ".3f"), ("local_recon", "local err", ".3f"),
                 ("needle_events", "needle ev", ".2f"), ("needle_tokens", "needle tok", ".2f"),
                 ("max_gap_s", "max gap s", ".1f"), ("ms_per_block", "ms/block", ".2f"),
                 ("late_over_early", "late/early", ".2f"), ("final_ms", "final ms", ".1f"),
                 ("state_mb", "state MB", ".2f"), ("peak_mb", "peak MB", ".1f")],
    "scaling": [("preset", "preset", "s"), ("device", "device", "s"), ("mode", "mode", "s"), ("frames", "frames", "d"),
                ("visual_tokens", "visual tok", "d"), ("llm_tokens", "LLM tok", "d"), ("status", "status", "s"),
                ("prefill_s", "prefill s", ".3f"), ("select_s", "select s", ".3f"), ("peak_mb", "peak MB", ".1f")],
}


def fmt(v, spec: str) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, float) and math.isnan(v):
        return "n/a"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    if spec == "s":
        return str(v)
    try:
        return format(v, spec) if spec != "d" else str(int(v))
    except (TypeError, ValueError):
        return str(v)


def columns_for(suite: str, rows: list[dict]):
    if suite in COLUMNS:
        return [c for c in COLUMNS[suite] if any(c[0] in r for r in rows)]
    keys: list[str] = []
    for r in rows:
        keys += [k for k, v in r.items() if k not in keys and k != "unit" and not isinstance(v, (list, dict))]
    return [(k, k, ".4g" if any(isinstance(r.get(k), float) for r in rows) else "s") for k in keys]


def print_table(suite: str, rows: list[dict], *, title: str | None = None, file=None) -> None:
    """A rich table of the rows on stdout (or `file`)."""
    cols = columns_for(suite, rows)
    t = Table(title=title or f"streamprune bench --suite {suite}", show_lines=False)
    for _, head, spec in cols:
        t.add_column(head, justify="left" if spec == "s" else "right")
    prev = None
    for r in rows:
        first = r.get(cols[0][0]) if cols else None
        if prev is not None and first != prev:
            t.add_section()
        prev = first
        t.add_row(*[fmt(r.get(k), spec) for k, _, spec in cols])
    Console(file=file or sys.stdout, width=250).print(t)


def markdown_table(header: list[str], cells: list[list]) -> str:
    """A markdown table: a header row, then one row per item of `cells` (already formatted text)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(lines)


def markdown_rows(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    """A markdown table of `rows` with columns [(row key, header, format)] (formats as in `fmt`)."""
    return markdown_table([h for _, h, _ in cols], [[fmt(r.get(k), spec) for k, _, spec in cols] for r in rows])


def markdown_for(suite: str, rows: list[dict], *, title: str, notes: list[str] | None = None) -> str:
    """'## title', the rows as a markdown table (the suite's COLUMNS, else every scalar key), then notes."""
    parts = [f"## {title}", "", markdown_rows(rows, columns_for(suite, rows)) if rows else "(no rows)"]
    if notes:
        parts += [""] + [f"- {n}" for n in notes]
    return "\n".join(parts)
