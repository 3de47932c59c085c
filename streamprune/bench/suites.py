"""`streamprune bench`: the suite registry and the one loop every suite runs through.

    opts = options("readers", out=Path("out/bench"), quick=True, given={"minutes": "1"})
    run_suite("readers", opts)

A suite module follows bench.protocol (OPTIONS, plan, run_unit, report; optional TITLE, finalize, plots,
THREADS). The loop plans the units, runs this rank's share through runner (resumable, shardable, progress
on stderr), merges the part files, writes OUT/<suite>.jsonl / .csv / .md and --json, and prints the report
on stdout. This module imports suite modules; a suite module never imports this one.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from pathlib import Path
from types import ModuleType

from rich.console import Console

from . import runner
from .protocol import SuiteOptions, parse_extra

log = logging.getLogger(__name__)
err = Console(stderr=True, soft_wrap=True)

REGISTRY = {  # suite name -> module (imported on use)
    "features": "streamprune.bench.features",
    "scaling": "streamprune.bench.scaling",
    "qa": "streamprune.bench.qa",
    "select": "streamprune.bench.select_suite",
    "readers": "streamprune.bench.readers_suite",
    "decoder": "streamprune.bench.decoder_suite",
    "ask": "streamprune.bench.ask_suite",
    "live-soak": "streamprune.bench.live_soak",
}
SUITES = tuple(REGISTRY)


def conforms(mod: ModuleType) -> bool:
    return all(callable(getattr(mod, f, None)) for f in ("plan", "run_unit", "report")) and hasattr(mod, "OPTIONS")


def load_suite(name: str, *, merge_only: bool = False):
    """The suite module (or, for a module not yet converted to the protocol, its temporary adapter).
    merge_only: a name outside the registry (results of a custom loop) gets a generic report."""
    if name not in REGISTRY:
        if merge_only:
            return _Generic(name)
        raise ValueError(f"unknown suite {name!r}; known: {', '.join(SUITES)}")
    try:
        mod = importlib.import_module(REGISTRY[name])
    except ImportError as e:
        raise ValueError(f"suite {name} is not available: {e}") from e
    if not conforms(mod):
        raise ValueError(f"suite {name} ({REGISTRY[name]}) does not follow bench.protocol")
    return mod


def options(name: str, *, given: dict | None = None, **common) -> SuiteOptions:
    """SuiteOptions for suite `name`: the shared options as keywords, `given` (name -> text) parsed against
    the suite's OPTIONS (an undeclared one is a one-line ValueError)."""
    suite = load_suite(name)
    opts = SuiteOptions(**common)
    opts.extra = parse_extra(name, getattr(suite, "OPTIONS", ()), given or {}, quick=opts.quick)
    return opts


# ---------------------------------------------------------------- the loop
def run_suite(name: str, opts: SuiteOptions, *, shard: str | None = None, max_units: int | None = None,
              merge_wait: float = 0.0, plots_dir=None) -> int:
    """Plan, run this rank's units (skipping those already done under opts.out), merge and report."""
    suite = load_suite(name)
    threads = opts.threads if opts.threads is not None else getattr(suite, "THREADS", None)
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    rank, world = runner.parse_shard(shard)
    units = suite.plan(opts)
    if not units:
        raise ValueError(f"{name}: nothing to run with these settings")
    mine = runner.shard_units(units, rank, world)
    err.print(f"[bold]{name}[/bold]: {len(units)} units, rank {rank}/{world} takes {len(mine)}; "
              f"results -> {opts.out}", highlight=False)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=False) as prog:
        task = prog.add_task(name, total=None)

        def on_progress(i, n, unit, dt):
            prog.update(task, completed=i, total=n, description=f"{name} {unit.name} ({dt:.1f}s)")

        summary = runner.run_units(name, units, lambda u: suite.run_unit(u, opts), opts.out, rank=rank, world=world,
                                   max_units=max_units, on_progress=on_progress)
    err.print(f"{name}: {summary.ran} units run, {summary.skipped} already done"
              + (" (stopped early: --max-units)" if summary.stopped_early else ""), highlight=False)
    if rank != 0:
        err.print(f"rank {rank} done; rank 0 (or `streamprune bench merge {opts.out}`) merges")
        return 0
    _wait_for_shards(opts.out, name, units, float(merge_wait or 0))
    finish(name, opts, plots_dir=plots_dir)
    return 0


def _wait_for_shards(out: Path, suite: str, units, wait_s: float) -> None:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
            return
    except ImportError:  # no torch.distributed: fall back to polling
        pass
    want = {u.id for u in units}
    t0 = time.monotonic()
    while wait_s > 0 and not want <= runner.done_ids(out, suite) and time.monotonic() - t0 < wait_s:
        time.sleep(2.0)


def finish(name: str, opts: SuiteOptions, plots_dir=None) -> tuple[list[dict], str]:
    """Merge the suite's part files under opts.out; write OUT/<suite>.jsonl, .csv, .md, --json and plots;
    print the report on stdout. Returns (rows, markdown)."""
    suite = load_suite(name, merge_only=True)
    rows, missing = runner.merge(opts.out, name)
    if callable(getattr(suite, "finalize", None)):
        rows = suite.finalize(rows, opts)
        runner.write_rows(opts.out, name, rows)
    text = suite.report(rows, opts)
    (opts.out / f"{name}.md").write_text(text + "\n", encoding="utf-8")
    print(text, flush=True)
    if opts.json is not None:
        write_json(opts.json, name, opts, rows, missing)
    written = []
    if callable(getattr(suite, "plots", None)):
        pdir = Path(plots_dir or opts.out)
        pdir.mkdir(parents=True, exist_ok=True)
        try:
            written = [p for p in suite.plots(rows, opts, pdir) if p is not None]
        except ImportError as e:
            err.print(f"[yellow]no plots: {e}[/yellow]")
    err.print(f"{name}: {len(rows)} rows -> {opts.out / (name + '.jsonl')}, .csv, .md"
              + (f"; {opts.json}" if opts.json else "")
              + (f"; plots: {', '.join(str(p) for p in written)}" if written else ""), highlight=False)
    if missing:
        err.print(f"[yellow]{name}: {len(missing)} units not finished yet (other shards?); "
                  f"run `streamprune bench merge {opts.out}` when they are[/yellow]")
    return rows, text


def write_json(path: Path, name: str, opts: SuiteOptions, rows: list[dict], missing: list[str]) -> Path:
    """--json: one file with every row of the run, the options it ran with and the units still missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"suite": name, "options": {"quick": opts.quick, "device": opts.device, "model": opts.model,
                                      "dtype": opts.dtype, "threads": opts.threads, **opts.extra},
           "rows": rows, "missing_units": missing}
    path.write_text(json.dumps(doc, indent=1, default=runner.json_default, allow_nan=True) + "\n", encoding="utf-8")
    return path


def merge_cmd(out, plots_dir=None) -> int:
    """`streamprune bench merge OUT`: merge and report every suite found under OUT (default options)."""
    out = Path(out)
    if not out.is_dir():
        raise ValueError(f"{out} is not a directory")
    found = runner.suites_in(out)
    if not found:
        raise ValueError(f"no bench results under {out} (expected <suite>.part-*.jsonl files)")
    for s in found:
        opts = options(s, out=out) if s in REGISTRY else SuiteOptions(out=out)
        finish(s, opts, plots_dir=plots_dir)
    return 0


class _Generic:
    """Merge-only: rows of a suite outside the registry, every scalar column."""

    OPTIONS = ()

    def __init__(self, name):
        self.name = name

    def report(self, rows, opts):
        from .report import markdown_for

        return markdown_for(self.name, rows, title=self.name)
