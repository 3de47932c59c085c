"""Resumable, shardable execution of benchmark units.

A suite is a list of `Unit`s (a stable id + JSON-able params) and a function `run_unit(unit) -> rows`.
Each finished unit is appended as one JSON line to `OUT/<suite>.part-RRR-of-WWW.jsonl` (flushed and
fsynced), so a killed run continues where it stopped: ids already present in any part file of the suite
are skipped. Ranks take interleaved slices of the unit list (`--shard i/n`, or RANK/WORLD_SIZE from
torchrun/accelerate); before a unit runs it is claimed (an O_EXCL file under `OUT/.<suite>.claims/`), so
several processes may also share one slice, and a killed process's claims are taken over. `merge` gathers every part file into `OUT/<suite>.jsonl` (one row per line, in plan
order) and `OUT/<suite>.csv`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unit:
    """One unit of work. `id` is stable across runs: a readable name plus a hash of the params."""

    name: str
    params: dict = field(hash=False, compare=False)

    @property
    def id(self) -> str:
        blob = json.dumps(self.params, sort_keys=True, default=str)
        return f"{self.name}#{hashlib.sha1(blob.encode()).hexdigest()[:10]}"


@dataclass
class RunSummary:
    suite: str
    total: int          # units in the whole plan
    mine: int           # units in this rank's slice
    skipped: int        # already done before this run
    ran: int            # finished in this run
    stopped_early: bool  # max_units reached before the slice was done
    part_file: Path


# ------------------------------------------------------------------ sharding
def parse_shard(spec: str | None = None, env: dict | None = None) -> tuple[int, int]:
    """(rank, world) from 'i/n', else from RANK/WORLD_SIZE in env, else (0, 1)."""
    env = os.environ if env is None else env
    if spec:
        try:
            i, n = (int(x) for x in spec.split("/"))
        except ValueError:
            raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {spec!r}") from None
    elif env.get("WORLD_SIZE"):
        try:
            i, n = int(env.get("RANK", env.get("LOCAL_RANK", "0"))), int(env["WORLD_SIZE"])
        except ValueError:
            raise ValueError("RANK/WORLD_SIZE must be integers") from None
    else:
        return 0, 1
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard rank must satisfy 0 <= i < n, got {i}/{n}")
    return i, n


def shard_units(units: Sequence[Unit], rank: int, world: int) -> list[Unit]:
    """Rank `rank`'s interleaved slice (units rank, rank+world, ...): balances heavy and light units."""
    return list(units[rank::world])


def check_unique(units: Sequence[Unit]) -> None:
    ids = [u.id for u in units]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"duplicate unit id {dup}")


# ------------------------------------------------------------------ files
def part_path(out: Path, suite: str, rank: int, world: int) -> Path:
    return Path(out) / f"{suite}.part-{rank:03d}-of-{world:03d}.jsonl"


def part_files(out: Path, suite: str) -> list[Path]:
    return sorted(Path(out).glob(f"{suite}.part-*.jsonl"))


def read_records(paths: Iterable[Path]) -> list[dict]:
    """Unit records from part files; a truncated or corrupt line (a kill mid-write) is ignored."""
    recs = []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            for ln in f:
                ln = ln.strip()
                if not ln:
                    continue
                try:
                    rec = json.loads(ln)
                except json.JSONDecodeError:
                    log.warning("ignoring a corrupt line in %s", p)
                    continue
                if isinstance(rec, dict) and "id" in rec and "rows" in rec:
                    recs.append(rec)
    return recs


def done_ids(out: Path, suite: str) -> set[str]:
    return {r["id"] for r in read_records(part_files(out, suite))}


def _append(path: Path, rec: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() > 0:  # a kill mid-write leaves a line without "\n": start on a fresh line
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write((json.dumps(rec, default=json_default, allow_nan=True) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())


def json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_plan(out: Path, suite: str, units: Sequence[Unit]) -> Path:
    """`OUT/<suite>.plan.json`: every unit id in order (atomic; merge orders rows by it). A later run with
    other settings in the same folder appends its new ids after the existing ones."""
    p = Path(out) / f"{suite}.plan.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    ids = json.loads(p.read_text())["units"] if p.is_file() else []
    known = set(ids)
    ids += [u.id for u in units if u.id not in known]
    tmp = p.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"suite": suite, "units": ids}, indent=0))
    os.replace(tmp, p)
    return p


# ------------------------------------------------------------------ run
def run_units(suite: str, units: Sequence[Unit], run_unit: Callable[[Unit], list[dict]], out: Path, *,
              rank: int = 0, world: int = 1, max_units: int | None = None,
              on_progress: Callable[[int, int, Unit, float], None] | None = None) -> RunSummary:
    """Run this rank's not-yet-done units in plan order, appending one JSON line per finished unit.

    max_units: stop after that many units ran in this call (used to simulate a kill in tests).
    on_progress(i, n, unit, seconds) is called after each unit.
    """
    check_unique(units)
    out = Path(out)
    write_plan(out, suite, units)
    order = {u.id: i for i, u in enumerate(units)}
    mine = shard_units(units, rank, world)
    done = done_ids(out, suite)
    todo = [u for u in mine if u.id not in done]
    path = part_path(out, suite, rank, world)
    ran, stopped = 0, False
    for j, u in enumerate(todo):
        if max_units is not None and ran >= max_units:
            stopped = True
            break
        if u.id in done_ids(out, suite) or not _claim(out, suite, u.id):
            continue  # finished or being run by another process on the same slice (work sharing)
        try:
            t0 = time.perf_counter()
            rows = run_unit(u)
            dt = time.perf_counter() - t0
            _append(path, {"id": u.id, "order": order[u.id], "suite": suite, "name": u.name, "params": u.params,
                           "rows": rows, "seconds": round(dt, 4), "rank": rank, "world": world})
        finally:
            _claim_path(out, suite, u.id).unlink(missing_ok=True)
        ran += 1
        if on_progress:
            on_progress(j + 1, len(todo), u, dt)
    return RunSummary(suite, len(units), len(mine), len(mine) - len(todo), ran, stopped, path)


# ------------------------------------------------------------------ claims
def _claim_path(out: Path, suite: str, uid: str) -> Path:
    return Path(out) / f".{suite}.claims" / hashlib.sha1(uid.encode()).hexdigest()


def _claim(out: Path, suite: str, uid: str) -> bool:
    """Claim a unit (atomic O_EXCL file holding host and pid) so several processes can share one slice.

    A claim left by a dead process on this host (a killed run) is taken over; a claim from another host is
    honoured for STALE_CLAIM_S seconds."""
    p = _claim_path(out, suite, uid)
    p.parent.mkdir(parents=True, exist_ok=True)
    me = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                host, pid = p.read_text().split()
                age = time.time() - p.stat().st_mtime
            except (OSError, ValueError):
                host, pid, age = "", "0", math.inf
            alive = _pid_alive(int(pid)) if host == socket.gethostname() else age < STALE_CLAIM_S
            if alive and f"{host} {pid}" != me:
                return False
            p.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        return True
    return False


STALE_CLAIM_S = 6 * 3600


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------------ merge
def merge(out: Path, suite: str) -> tuple[list[dict], list[str]]:
    """Merge every part file of `suite` under `out`: (rows in plan order, ids of plan units still missing).

    Writes OUT/<suite>.jsonl (one row per line, each with `unit` = its unit id) and OUT/<suite>.csv.
    """
    out = Path(out)
    files = part_files(out, suite)
    if not files:
        raise ValueError(f"no {suite} results under {out} (expected {suite}.part-*.jsonl)")
    plan_p = out / f"{suite}.plan.json"
    plan = json.loads(plan_p.read_text())["units"] if plan_p.is_file() else None
    pos = {uid: i for i, uid in enumerate(plan)} if plan else {}
    recs: dict[str, dict] = {}
    for r in read_records(files):
        recs.setdefault(r["id"], r)
    ordered = sorted(recs.values(), key=lambda r: (pos.get(r["id"], math.inf), r.get("order", 0), r["id"]))
    rows = []
    for r in ordered:
        for row in r["rows"]:
            rows.append({"unit": r["id"], **row})
    missing = [uid for uid in plan if uid not in recs] if plan else []
    write_rows(out, suite, rows)
    return rows, missing


def write_rows(out: Path, suite: str, rows: list[dict]) -> None:
    """OUT/<suite>.jsonl (one row per line) and OUT/<suite>.csv."""
    with open(Path(out) / f"{suite}.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, default=json_default) + "\n")
    write_csv(Path(out) / f"{suite}.csv", rows)


def write_csv(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for row in rows:
            w.writerow({k: _csv_cell(row.get(k)) for k in keys})


def _csv_cell(v):
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return "" if v is None else v


def suites_in(out: Path) -> list[str]:
    """Suite names that have part files under `out`."""
    return sorted({p.name.split(".part-")[0] for p in Path(out).glob("*.part-*.jsonl")})
