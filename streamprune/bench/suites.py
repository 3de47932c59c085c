"""`streamprune bench`: suite registry, the resumable/sharded run loop, merge, tables and plots.

Own suites (features, scaling, qa) are planned as units and run through `runner`; the other modules'
suites (select, readers, decoder, ask, live-soak) are called through their own `main(argv)` (their own options and table).
"""

from __future__ import annotations

import importlib
import logging
import time
from pathlib import Path

from rich.console import Console

from . import runner
from .report import print_table

log = logging.getLogger(__name__)
err = Console(stderr=True)

OWN = ("features", "scaling", "qa")
EXTERNAL = {"select": "select_suite", "readers": "readers_suite", "decoder": "decoder_suite", "ask": "ask_suite",
            "live-soak": "live_soak"}
SUITES = OWN + tuple(EXTERNAL)
DEFAULT_OUT = Path("out") / "bench"


def _csv(s, cast=str):
    if s is None or s == "":
        return None
    if isinstance(s, (list, tuple)):
        return [cast(x) for x in s]
    try:
        return [cast(x.strip()) for x in str(s).split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"cannot parse the list {s!r}") from None


def external_argv(mod, args) -> list[str]:
    """argv for another module's suite `main`: our options it also declares, then --suite-args verbatim."""
    import inspect
    import shlex

    src = inspect.getsource(mod)
    argv = []
    if getattr(args, "quick", False) and '"--quick"' in src:
        argv.append("--quick")
    for opt in ("device", "threads", "dtype"):
        v = getattr(args, opt, None)
        if v is not None and f'"--{opt}"' in src:
            argv += [f"--{opt}", str(v)]
    return argv + shlex.split(getattr(args, "suite_args", None) or "")


def run_external(suite: str, args) -> int:
    """Run another module's suite through its own `main(argv)` (its own table and options)."""
    try:
        mod = importlib.import_module(f"streamprune.bench.{EXTERNAL[suite]}")
    except ImportError as e:
        raise ValueError(f"suite {suite} is not available: {e}") from e
    argv = external_argv(mod, args)
    try:
        return int(mod.main(argv) or 0)
    except SystemExit as e:  # its argparse rejected an option: it printed the reason
        if e.code in (0, None):
            return 0
        raise ValueError(f"suite {suite} rejected its options {argv} (pass its own flags with --suite-args)") from None


def plan_suite(suite: str, args) -> tuple[list[runner.Unit], callable]:
    """(units, run_unit) of one of our suites from CLI-like args."""
    quick = bool(getattr(args, "quick", False))
    out = Path(getattr(args, "out", None) or DEFAULT_OUT)
    if suite == "features":
        from . import features as F

        streams, methods, budgets = F.settings(quick, _csv(getattr(args, "methods", None)),
                                               _csv(getattr(args, "budgets", None), int),
                                               _csv(getattr(args, "streams", None)))
        return F.plan(streams, methods, budgets), F.make_runner(out / "cache")
    if suite == "scaling":
        from . import scaling as S

        return S.plan_from_args(args), S.make_runner(args)
    if suite == "qa":
        from . import qa as Q

        return Q.plan_from_args(args), Q.make_runner(args)
    raise ValueError(f"unknown suite {suite!r}; known: {', '.join(SUITES)}")


def run(args) -> int:
    """Entry point of `streamprune bench --suite S` (args: argparse namespace from the CLI)."""
    suite = args.suite
    if suite in EXTERNAL:
        return run_external(suite, args)
    if suite not in OWN:
        raise ValueError(f"unknown suite {suite!r}; known: {', '.join(SUITES)}")
    out = Path(getattr(args, "out", None) or DEFAULT_OUT)
    threads = getattr(args, "threads", None)
    if threads is None and suite == "features":
        threads = 1  # many small ops: extra intra-op threads only spin (20x slower on a loaded 2-core box)
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    rank, world = runner.parse_shard(getattr(args, "shard", None))
    units, run_unit = plan_suite(suite, args)
    if not units:
        raise ValueError(f"{suite}: nothing to run with these settings")
    mine = runner.shard_units(units, rank, world)
    err.print(f"[bold]{suite}[/bold]: {len(units)} units, rank {rank}/{world} takes {len(mine)}; results -> {out}")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=False) as prog:
        task = prog.add_task(suite, total=None)

        def on_progress(i, n, unit, dt):
            prog.update(task, completed=i, total=n, description=f"{suite} {unit.name} ({dt:.1f}s)")

        summary = runner.run_units(suite, units, run_unit, out, rank=rank, world=world,
                                   max_units=getattr(args, "max_units", None), on_progress=on_progress)
    err.print(f"{suite}: {summary.ran} units run, {summary.skipped} already done"
              + (" (stopped early: --max-units)" if summary.stopped_early else ""))
    if rank != 0:
        err.print(f"rank {rank} done; rank 0 (or `streamprune bench merge {out}`) merges")
        return 0
    wait = float(getattr(args, "merge_wait", 0) or 0)
    _wait_for_shards(out, suite, units, wait)
    return report(out, suite, plots_dir=getattr(args, "plots_dir", None))


def _wait_for_shards(out: Path, suite: str, units, wait_s: float) -> None:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
            return
    except Exception:  # noqa: BLE001 - no process group: fall back to polling
        pass
    want = {u.id for u in units}
    t0 = time.monotonic()
    while wait_s > 0 and not want <= runner.done_ids(out, suite) and time.monotonic() - t0 < wait_s:
        time.sleep(2.0)


def report(out: Path, suite: str, plots_dir=None) -> int:
    """Merge the suite's part files, print the table (stdout), write CSV/JSONL and plots."""
    rows, missing = runner.merge(out, suite)
    if suite == "qa":  # accuracy relative to the full-token run: known only after the merge
        from .qa import add_relative

        rows = add_relative(rows)
        runner.write_rows(out, suite, rows)
    print_table(suite, rows)
    pdir = Path(plots_dir or out)
    pdir.mkdir(parents=True, exist_ok=True)
    written = make_plots(suite, rows, pdir)
    err.print(f"{suite}: {len(rows)} rows -> {out / (suite + '.csv')}, {out / (suite + '.jsonl')}"
              + (f"; plots: {', '.join(str(p) for p in written)}" if written else ""))
    if missing:
        err.print(f"[yellow]{suite}: {len(missing)} units not finished yet (other shards?); "
                  f"run `streamprune bench merge {out}` when they are[/yellow]")
    return 0


def make_plots(suite: str, rows: list[dict], pdir: Path) -> list[Path]:
    from . import plots

    try:
        if suite == "features":
            ps = plots.plot_features_quality(rows, pdir) + [plots.plot_features_cost(rows, pdir)]
        elif suite == "scaling":
            ps = [plots.plot_scaling(rows, pdir)]
        elif suite == "qa":
            ps = [plots.plot_qa(rows, pdir)]
        else:
            ps = []
    except ImportError as e:
        err.print(f"[yellow]no plots: {e}[/yellow]")
        return []
    return [p for p in ps if p is not None]


def merge_cmd(out, plots_dir=None) -> int:
    """`streamprune bench merge OUT`: merge and report every suite found under OUT."""
    out = Path(out)
    if not out.is_dir():
        raise ValueError(f"{out} is not a directory")
    suites = runner.suites_in(out)
    if not suites:
        raise ValueError(f"no bench results under {out} (expected <suite>.part-*.jsonl files)")
    for s in suites:
        report(out, s, plots_dir=plots_dir)
    return 0
