"""`streamprune bench --suite qa`: video QA accuracy relative to the full-token run, over lmms-eval's outputs.

The questions, prompts, answer extraction and metrics are lmms-eval's own task configs (`lmms-eval --model
streamprune`, streamprune.integrations.lmms_eval); this suite adds only what lmms-eval lacks:

- read lmms-eval output folders (`--opt runs=DIR,DIR`: each the --output_path of one run: its results JSON,
  its samples JSONL and streamprune's per-sample log) into one row per (run, task, metric): the task's score
  as lmms-eval reports it, with the run's method / budget / protocol (from its model_args) and, from the
  per-sample log, the realised retention (tokens to the LLM / tokens seen), TTFT and peak memory;
- the per-budget sweep (`--opt tasks=videomme,...`): one lmms-eval run per (method, budget), plus the
  full-token run (method=full), each into OUT/lmms/<method>-<budget>/;
- accuracy relative to the full-token run of the same model, task, metric and protocol (finalize), its
  table (report) and plot (plots).

    streamprune bench --suite qa --model Qwen/Qwen2-VL-7B-Instruct --device cuda \\
        --opt tasks=videomme,mvbench --opt methods=subspace,uniform,window --opt budgets=256,1024
    streamprune bench --suite qa --opt runs=out/lmms/full,out/lmms/subspace-1024
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
import sys
from pathlib import Path

from .protocol import Option, SuiteOptions, boolean, model_kind, positive, strs
from .runner import Unit

log = logging.getLogger(__name__)

TITLE = "qa: lmms-eval accuracy per method and budget, relative to the full-token run"
FULL = "full"
OPTIONS = (
    Option("runs", strs, None, "read these lmms-eval output folders (comma-separated) instead of running"),
    Option("tasks", strs, None, "lmms-eval tasks to sweep (comma-separated), e.g. videomme,mvbench"),
    Option("methods", strs, ["subspace", "uniform", "random", "window"], "methods to sweep",
           quick_default=["subspace", "random"]),
    Option("budgets", lambda s: [int(x) for x in strs(s)], [256, 1024], "visual-token budgets to sweep",
           quick_default=[64]),
    Option("full", boolean, True, "also run the full-token arm (method=full), the denominator of `relative`"),
    Option("protocol", str, "offline", "the plugin's protocol: offline | streaming"),
    Option("fps", positive(float), 1.0, "frames sampled per second"),
    Option("limit", int, None, "lmms-eval --limit (questions per task)", quick_default=4),
    Option("include_path", str, None, "lmms-eval --include_path (local task YAMLs)"),
    Option("workdir", str, None, "working directory for lmms-eval (local tasks' data_files resolve there)"),
    Option("model_args", str, "", "more model_args for every run, e.g. memory=4096,max_frames=64"),
)


# ---------------------------------------------------------------- reading lmms-eval's outputs
def parse_model_args(s: str) -> dict:
    """'pretrained=x,budget=1024,method=subspace' -> {'pretrained': 'x', 'budget': '1024', ...} (text values)."""
    out = {}
    for part in filter(None, (p.strip() for p in str(s or "").split(","))):
        k, eq, v = part.partition("=")
        if eq:
            out[k.strip()] = v.strip()
    return out


def _jsonl(p: Path) -> list[dict]:
    try:
        return [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"qa: cannot read {p}: {str(e).splitlines()[0]}") from None


def _mean(xs) -> float:
    xs = [float(x) for x in xs if x is not None and math.isfinite(float(x))]
    return sum(xs) / len(xs) if xs else math.nan


_RESULTS = re.compile(r"^\d{8}_\d{6}_results\.json$")


def results_files(folder) -> list[Path]:
    """lmms-eval's aggregated results files under an --output_path: <model>/<YYYYmmdd_HHMMSS>_results.json
    (tasks' own files, such as OVO-Bench's submissions/*_acc_results.json, are not these)."""
    return [p for p in Path(folder).glob("*/*_results.json") if _RESULTS.match(p.name)]


def read_run(folder) -> list[dict]:
    """One row per (task, numeric metric) of the lmms-eval run whose --output_path is `folder` (its newest
    results JSON), with the run's settings and streamprune's per-sample aggregates for that task."""
    folder = Path(folder)
    results = sorted(results_files(folder), key=lambda p: p.stat().st_mtime)
    if not results:
        raise ValueError(f"qa: no lmms-eval results (<model>/<date>_<time>_results.json) under {folder}")
    res_path = results[-1]
    try:
        res = json.loads(res_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"qa: cannot read {res_path}: {str(e).splitlines()[0]}") from None
    cfg = res.get("config", {})
    margs = parse_model_args(cfg.get("model_args", ""))
    stats = [r for p in sorted((folder / "streamprune").glob("*.jsonl")) for r in _jsonl(p)]
    method = margs.get("method", "subspace")
    method = "subspace" if method == "ours" else method
    budget = FULL if method == FULL else (f"r{margs['retention_ratio']}" if "retention_ratio" in margs
                                          else int(float(margs.get("budget", 1024))))
    stamp = res_path.name.removesuffix("_results.json")
    rows = []
    for task, metrics in sorted(res.get("results", {}).items()):
        samples = res_path.parent / f"{stamp}_samples_{task}.jsonl"
        n = len(_jsonl(samples)) if samples.is_file() else res.get("n-samples", {}).get(task, {}).get("effective")
        mine = [r for r in stats if r.get("task") == task]
        for key, value in sorted(metrics.items()):
            name, _, flt = key.partition(",")
            if "stderr" in name or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            rows.append({
                "run": str(folder), "task": task, "metric": name, "filter": flt or "none", "value": float(value),
                "n": n, "model": cfg.get("model_args") and margs.get("pretrained"), "method": method,
                "budget": budget, "protocol": margs.get("protocol", "offline"), "fps": margs.get("fps"),
                "questions": len(mine), "retention": _mean(r.get("retention") for r in mine),
                "tokens_to_llm": _mean(r.get("tokens_to_llm") for r in mine),
                "tokens_seen": _mean(r.get("tokens_seen") for r in mine),
                "ttft_s": _mean(r.get("ttft_s") for r in mine), "prefill_s": _mean(r.get("prefill_s") for r in mine),
                "peak_mb": max((float(r["peak_memory_mb"]) for r in mine if r.get("peak_memory_mb")),
                               default=math.nan),
            })
    if not rows:
        raise ValueError(f"qa: {res_path} holds no numeric task metric")
    return rows


def add_relative(rows: list[dict]) -> list[dict]:
    """relative = value / value of the full-token run (same model, task, metric, filter, protocol); NaN with
    `relative_note` saying why when that run is missing or scored 0."""
    key = lambda r: (r.get("model"), r.get("task"), r.get("metric"), r.get("filter"), r.get("protocol"))  # noqa: E731
    full = {key(r): r for r in rows if r.get("method") == FULL}
    for r in rows:
        f = full.get(key(r))
        if f is None:
            r["relative"], r["relative_note"] = math.nan, "no full-token run"
        elif not f.get("value"):
            r["relative"], r["relative_note"] = math.nan, "full-token score is 0"
        else:
            r["relative"] = r["value"] / f["value"]
            r.pop("relative_note", None)
    return rows


# ---------------------------------------------------------------- the sweep: one lmms-eval run per unit
def lmms_command(opts: SuiteOptions, model: str, method: str, budget, out: Path) -> list[str]:
    """`python -m lmms_eval ...` for one (method, budget) of the sweep (budget None: method=full)."""
    x = opts.extra
    margs = [f"pretrained={model}", f"method={method}", f"fps={x['fps']:g}", f"protocol={x['protocol']}"]
    if budget is not None:
        margs.append(f"budget={int(budget)}")
    if opts.device:
        margs.append(f"device={opts.device}")
    if opts.dtype:
        margs.append(f"dtype={opts.dtype}")
    if x.get("model_args"):
        margs.append(str(x["model_args"]).strip(","))
    cmd = [sys.executable, "-m", "lmms_eval", "--model", "streamprune", "--model_args", ",".join(margs),
           "--tasks", ",".join(x["tasks"]), "--output_path", str(out), "--log_samples"]
    if x.get("limit"):
        cmd += ["--limit", str(int(x["limit"]))]
    if x.get("include_path"):
        cmd += ["--include_path", str(Path(x["include_path"]).resolve())]
    return cmd


def _model(opts: SuiteOptions) -> str:
    kind, value = model_kind(opts.model)
    if kind == "checkpoint":
        return value
    if kind == "random":
        raise ValueError("qa: lmms-eval loads a checkpoint folder or hub id; --model random:... is not one")
    from ..models import write_tiny_model

    folder = opts.out / f"tiny-{value}"
    return str(folder if (folder / "config.json").is_file() else write_tiny_model(value, folder))


def plan(opts: SuiteOptions) -> list[Unit]:
    x = opts.extra
    if x.get("runs"):
        return [Unit(f"qa/read/{Path(r).name}", {"read": str(Path(r).resolve())}) for r in x["runs"]]
    if not x.get("tasks"):
        raise ValueError("qa: pass --opt tasks=videomme,... (lmms-eval tasks to sweep) or --opt runs=DIR,... "
                         "(lmms-eval output folders to read)")
    if x["protocol"] not in ("offline", "streaming"):
        raise ValueError(f"qa: protocol must be offline or streaming, got {x['protocol']!r}")
    import importlib.util

    if importlib.util.find_spec("lmms_eval") is None:
        raise ValueError("qa: the sweep runs lmms-eval, which is not installed (pip install -e '.[lmms-eval]')")
    arms = ([(FULL, None)] if x["full"] else []) + [(m, int(k)) for m in x["methods"] for k in x["budgets"]]
    return [Unit(f"qa/{x['protocol']}/{m}" + ("" if k is None else f"/k{k}"), {"method": m, "budget": k})
            for m, k in arms]


def run_unit(unit: Unit, opts: SuiteOptions) -> list[dict]:
    p = unit.params
    if "read" in p:
        return read_run(p["read"])
    name = p["method"] + ("" if p["budget"] is None else f"-{p['budget']}")
    out = (opts.out / "lmms" / f"{opts.extra['protocol']}-{name}").resolve()
    cmd = lmms_command(opts, _model(opts), p["method"], p["budget"], out)
    log.info("qa: %s", " ".join(cmd))
    done = subprocess.run(cmd, cwd=opts.extra.get("workdir") or None, capture_output=True, text=True,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    try:  # lmms-eval exits 0 even when a run fails: its outputs say whether it ran
        return read_run(out)
    except ValueError:
        tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["(no output)"]
        raise ValueError(f"qa: lmms-eval run {name} wrote no results (exit {done.returncode}): {tail[0]}") from None


def finalize(rows: list[dict], opts: SuiteOptions) -> list[dict]:
    return add_relative(rows)


COLUMNS = [("task", "task", "s"), ("metric", "metric", "s"), ("protocol", "protocol", "s"), ("method", "method", "s"),
           ("budget", "budget", "s"), ("n", "n", "d"), ("value", "score", ".3f"), ("relative", "rel. to full", ".3f"),
           ("retention", "retention", ".3f"), ("tokens_to_llm", "tokens to LLM", ".1f"), ("ttft_s", "TTFT s", ".3f"),
           ("peak_mb", "peak MB", ".0f"), ("relative_note", "note", "s")]


def report(rows: list[dict], opts: SuiteOptions) -> str:
    from .report import markdown_rows

    order = lambda r: (r.get("task", ""), r.get("metric", ""), r.get("protocol", ""),  # noqa: E731
                       r.get("method") != FULL, r.get("method", ""),
                       math.inf if not isinstance(r.get("budget"), int) else r["budget"])
    rows = sorted(rows, key=order)
    cols = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    notes = ["score: the task's metric as lmms-eval reports it (its prompts, answer extraction and aggregation)",
             "retention: tokens to the LLM / visual tokens of the full input, realised (mean over questions)",
             "TTFT: question stage + prefill after the video was read (streaming: when the question arrives)"]
    body = markdown_rows(rows, cols) if rows else "(no rows)"
    return "\n".join([f"## {TITLE}", "", body, ""] + [f"- {n}" for n in notes])


def plots(rows: list[dict], opts: SuiteOptions, folder: Path) -> list[Path]:
    """Relative accuracy vs budget, one line per (task: metric, method) (bench.plots.plot_qa)."""
    from . import plots as P

    rs = [{**r, "dataset": f"{r['task']}:{r['metric']}", "streaming": r.get("protocol") == "streaming"}
          for r in rows if isinstance(r.get("budget"), int)]
    Path(folder).mkdir(parents=True, exist_ok=True)
    p = P.plot_qa(rs, Path(folder))
    return [p] if p is not None else []
