"""The one bench suite protocol: what every suite module exposes, the options it receives, how its own
options are declared and parsed.

A suite module (features, scaling, qa, select, readers, decoder, ask, live-soak) exposes

    OPTIONS: tuple[Option, ...]                      # its own options (may be empty); parsed into opts.extra
    plan(opts: SuiteOptions) -> list[runner.Unit]    # the units of work (stable ids; resumable, shardable)
    run_unit(unit: runner.Unit, opts) -> list[dict]  # one unit's rows (JSON-able values)
    report(rows: list[dict], opts) -> str            # markdown: a "## title" line, then tables and notes
                                                     # (bench.report: markdown_table, markdown_rows, markdown_for)

and optionally

    TITLE: str                                       # one line: the report's title
    THREADS: int                                     # torch threads when --threads is not given
    finalize(rows, opts) -> list[dict]               # rows after the merge (e.g. accuracy relative to "full")
    plots(rows, opts, folder: Path) -> list[Path]    # PNG files written into folder

It is registered by name in `bench/suites.py`; the shared loop there (runner.py underneath: resumable,
shardable, progress on stderr) runs the units, writes `--out` (JSONL parts, merged JSONL + CSV, a markdown
file with the report) and `--json PATH` (every row of the run in one file), and prints the report on stdout.
A suite module never imports `bench.suites` and never parses argv itself.

The meaning of the shared options is the same for every suite:

    out      results folder                          json     one JSON file with every row, or None
    quick    a grid that runs in minutes on a laptop CPU
    device   torch device for everything the suite builds (None: the suite's default, normally cpu)
    model    what the suite loads (see `model_kind`); None = a tiny random-weight model
    dtype    torch dtype name (None: the model's / device's default)
    threads  torch intra-op threads (None: the suite's default, applied by the loop before plan())

This module imports neither torch nor a suite module (the CLI parses options without loading torch).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

DEFAULT_OUT = Path("out") / "bench"


@dataclass
class SuiteOptions:
    """Options every suite receives. `extra` holds the suite's own options, already parsed (every declared
    option is present: the given value, else its default)."""

    out: Path = DEFAULT_OUT
    json: Path | None = None
    quick: bool = False
    device: str | None = None
    model: str | None = None
    dtype: str | None = None
    threads: int | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.out = Path(self.out)
        self.json = Path(self.json) if self.json is not None else None


@dataclass(frozen=True)
class Option:
    """One suite-specific option: `name` (as on the command line, without dashes: `--opt name=VALUE`),
    `parse` (text -> value; raises ValueError on bad text), `default` (used as is, not parsed; may depend on
    --quick through `quick_default`), `help` (one line)."""

    name: str
    parse: Callable[[str], Any] = str
    default: Any = None
    help: str = ""
    quick_default: Any = None  # the default under --quick when not None


class Suite(Protocol):
    """What `bench.suites` expects from a suite module (see the module docstring)."""

    OPTIONS: tuple[Option, ...]

    def plan(self, opts: SuiteOptions) -> list: ...

    def run_unit(self, unit, opts: SuiteOptions) -> list[dict]: ...

    def report(self, rows: list[dict], opts: SuiteOptions) -> str: ...


# ---------------------------------------------------------------- value parsers (for Option.parse)
def csv_list(s, cast: Callable[[str], Any] = str) -> list | None:
    """'a, b,c' -> ['a', 'b', 'c'] with `cast` applied to each item; None or '' -> None; a list or tuple
    is cast item by item. A bad item is a one-line ValueError."""
    if s is None or s == "":
        return None
    items = list(s) if isinstance(s, (list, tuple)) else [x.strip() for x in str(s).split(",") if x.strip()]
    try:
        return [cast(x) for x in items]
    except (TypeError, ValueError):
        raise ValueError(f"cannot parse the list {s!r}") from None


def strs(s) -> list[str] | None:
    return csv_list(s, str)


def ints(s) -> list[int] | None:
    return csv_list(s, int)


def floats(s) -> list[float] | None:
    return csv_list(s, float)


def boolean(s) -> bool:
    """'1/true/yes/on' -> True, '0/false/no/off' -> False."""
    if isinstance(s, bool):
        return s
    v = str(s).strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {s!r}")


def positive(cast: Callable[[str], Any]) -> Callable[[str], Any]:
    """A parser that also requires the value to be > 0 (and finite)."""

    def parse(s):
        v = cast(s)
        if not (v > 0 and math.isfinite(v)):
            raise ValueError(f"expected a positive number, got {s!r}")
        return v

    return parse


# ---------------------------------------------------------------- suite options
def parse_extra(suite: str, declared: Sequence[Option], given: dict[str, Any], *, quick: bool = False) -> dict:
    """The suite's `extra` dict: every declared option, parsed from `given` (name -> text; '-' and '_' are the
    same) or its default. An option the suite does not declare, or a value its parser rejects, is a
    one-line ValueError that names the suite's options."""
    by_name = {o.name.replace("-", "_"): o for o in declared}
    out = {o.name.replace("-", "_"): (o.quick_default if quick and o.quick_default is not None else o.default)
           for o in declared}
    for key, text in given.items():
        k = key.replace("-", "_")
        if k not in by_name:
            known = ", ".join(o.name for o in declared) or "none"
            raise ValueError(f"suite {suite} has no option {key!r} (its options: {known})")
        try:
            out[k] = by_name[k].parse(text) if isinstance(text, str) else text
        except ValueError as e:
            raise ValueError(f"suite {suite}, option {key}: {str(e).splitlines()[0] if str(e) else 'bad value'}") \
                from None
    return out


def parse_pairs(pairs: Sequence[str] | None) -> dict[str, str]:
    """['key=value', ...] (the CLI's repeatable `--opt`) -> {key: value}; a pair without '=' is a one-line
    ValueError."""
    out: dict[str, str] = {}
    for p in pairs or ():
        key, eq, value = str(p).partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--opt wants KEY=VALUE, got {p!r}")
        out[key.strip()] = value.strip()
    return out


# ---------------------------------------------------------------- --model
def model_kind(model: str | None) -> tuple[str, str]:
    """What `--model` names, as (kind, value):

        None, 'tiny', 'tiny:FAMILY'   ('tiny', FAMILY)   tiny random-weight model (default family qwen2_vl)
        'random:PRESET[:layers=N,depth=M]'  ('random', 'PRESET[:...]')  real-size config, random weights
        anything else                 ('checkpoint', it) a local folder or hub id for models.load_model
    """
    if model is None or model == "" or model == "tiny":
        return "tiny", "qwen2_vl"
    if model.startswith("tiny:"):
        return "tiny", model.split(":", 1)[1] or "qwen2_vl"
    if model.startswith("random:"):
        preset = model.split(":", 1)[1]
        if not preset:
            raise ValueError("--model random:PRESET needs a preset name, e.g. random:qwen2-vl-2b")
        return "random", preset
    return "checkpoint", model


def load_adapter(model: str | None, folder: Path, *, device=None, dtype=None, attn_implementation=None):
    """The adapter `--model` names (see model_kind), on `device` in `dtype`. A tiny model is written under
    `folder`. Imports torch and transformers."""
    from streamprune import models as M

    kind, value = model_kind(model)
    if kind == "tiny":
        if value not in M.FAMILIES:
            raise ValueError(f"unknown tiny family {value!r}; choose one of {', '.join(M.FAMILIES)}")
        path = M.write_tiny_model(value, Path(folder) / f"tiny-{value}")
        return M.load_model(str(path), device=device or "cpu", dtype=dtype, attn_implementation=attn_implementation)
    if kind == "random":
        return build_preset(value, device=device or "cpu", dtype=dtype, attn_implementation=attn_implementation)
    return M.load_model(value, device=device, dtype=dtype, attn_implementation=attn_implementation)


def parse_preset(spec: str) -> tuple[str, dict]:
    """'qwen2-vl-2b:layers=2,depth=1' -> ('qwen2-vl-2b', {'layers': 2, 'depth': 1})."""
    name, _, rest = spec.partition(":")
    kw = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        k, eq, v = part.partition("=")
        if not eq or k not in ("layers", "depth"):
            raise ValueError(f"bad preset option {part!r} in {spec!r} (use layers=N,depth=M)")
        try:
            kw[k] = int(v)
        except ValueError:
            raise ValueError(f"bad preset option {part!r} in {spec!r} (use layers=N,depth=M)") from None
    return name, kw


def build_preset(spec: str, *, device=None, dtype=None, attn_implementation=None):
    """A real-size random-weight adapter from a preset spec (`parse_preset`)."""
    from streamprune.models import PRESETS, build_random_model

    name, kw = parse_preset(spec)
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return build_random_model(name, device=device, dtype=dtype, attn_implementation=attn_implementation, **kw)
