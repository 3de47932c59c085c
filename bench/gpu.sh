#!/usr/bin/env bash
# bench/gpu.sh: the prepared GPU run (issue 12): the select, ask (TTFT full vs pruned, Qwen2-VL-2B and -7B
# presets with random weights, bf16) and decoder suites on one device, inside a time budget, merged into one
# JSON (+ one markdown file and the log).
#
#   bash bench/gpu.sh                         # on the lent H200, from the repository root
#   DEVICE=cpu QUICK=1 bash bench/gpu.sh      # the same script on a CPU: quick grids, tiny models
#   bash bench/gpu.sh --dry-run               # print the commands, run nothing
#   bash bench/gpu.sh --fetch-wheels          # here, with pip: download the pinned wheels into .whl/
#
# Environment (defaults):
#   DEVICE=cuda  QUICK=0  BUDGET_S=470 (whole run, s; each suite gets min(its slice, what is left))
#   OUT=out/gpu (what comes back: gpu.json, gpu.md, gpu.log; on the device machine $OUT is set for you)
#   WORK=$TMPDIR/streamprune-gpu (each suite's results folder; not sent back)
#   WHEELS=.whl (if it holds *.whl: pip-installed with --no-deps into $WORK/site, put first on PYTHONPATH)
#   PYTHON=python3   SUITES="select ask-2b ask-7b decoder" (DEVICE=cpu: "select ask decoder", tiny models;
#   add "gram" for the question stage from the memory's Gram vs the row kernel on the device, ~60 s more)
#   SELECT_S=110 ASK2_S=120 ASK7_S=150 DECODER_S=70 (per-suite slices, s)
#   SELECT_ARGS / ASK_ARGS / DECODER_ARGS (extra `streamprune bench` flags for that suite)
#
# The device's python has torch 2.11 + transformers 5.17 (DESIGN.md 9): the project's transformers and av
# travel as wheels (--fetch-wheels here, then run with `.whl` in the device tool's `carry`, and `/.whl/` in
# .git/info/exclude so that the folder is ignored). The project itself is not installed there: the
# repository root goes on PYTHONPATH. A suite stopped by its slice (SIGINT, then SIGKILL 15 s later) keeps the
# units it finished (the bench loop is resumable); they are merged and marked "timed_out" in gpu.json.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
BUDGET_S=${BUDGET_S:-470}
RESULTS=${OUT:-$ROOT/out/gpu}
WORK=${WORK:-${TMPDIR:-/tmp}/streamprune-gpu}
WHEELS=${WHEELS:-$ROOT/.whl}
PY=${PYTHON:-python3}
if [ "$DEVICE" = cpu ]; then SUITES=${SUITES:-select ask decoder}; else SUITES=${SUITES:-select ask-2b ask-7b decoder}; fi
DRY=0
START=$(date +%s)  # the budget counts from here (wheel install and checks included)

usage() { sed -n '2,27p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

fetch_wheels() {  # the pinned versions installed here, as cp312 manylinux x86-64 wheels for the device
    local tf av
    tf=$("$PY" -c 'import importlib.metadata as m; print(m.version("transformers"))') || return 2
    av=$("$PY" -c 'import importlib.metadata as m; print(m.version("av"))') || return 2
    mkdir -p "$WHEELS"
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$WHEELS" "transformers==$tf" "av==$av" || return 2
    ls -l "$WHEELS"
    echo "add '/.whl/' to .git/info/exclude, and carry [\".whl\"] in the device call" >&2
}

for a in "$@"; do
    case $a in
        --dry-run) DRY=1 ;;
        --fetch-wheels) fetch_wheels; exit $? ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown argument $a (see --help)" >&2; exit 2 ;;
    esac
done
case $QUICK in 0|1) ;; *) echo "error: QUICK must be 0 or 1, got $QUICK" >&2; exit 2 ;; esac
case $BUDGET_S in ''|*[!0-9]*) echo "error: BUDGET_S must be a whole number of seconds" >&2; exit 2 ;; esac

mkdir -p "$RESULTS" "$WORK"
LOG=$RESULTS/gpu.log
: > "$LOG"
say() { echo "[gpu.sh $(date -u +%H:%M:%S)] $*" | tee -a "$LOG" >&2; }

export PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    if [ $DRY = 1 ]; then
        say "would install $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $WORK/site"
    else
        say "installing $(ls "$WHEELS"/*.whl | tr '\n' ' ') into $WORK/site"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
            "$WHEELS"/*.whl >>"$LOG" 2>&1 || { say "error: wheel install failed (see $LOG)"; exit 2; }
    fi
    export PYTHONPATH="$ROOT:$WORK/site${PYTHONPATH#"$ROOT"}"
fi
if [ $DRY = 0 ] && ! "$PY" -c "import torch, transformers, rich, streamprune.cli" >>"$LOG" 2>&1; then
    say "error: $PY cannot import torch / transformers / rich / streamprune (see $LOG; PYTHON=... picks another)"
    exit 2
fi
[ $DRY = 1 ] || "$PY" - >>"$LOG" 2>&1 <<'EOF'
import importlib.metadata as m, torch
print("python packages:", {p: m.version(p) for p in ("torch", "transformers", "tokenizers", "av")
                           if __import__("importlib").util.find_spec(p.replace("-", "_"))})
print("cuda:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF

Q=(); [ "$QUICK" = 1 ] && Q=(--quick)
ASK0=(); ASK2=(--model random:qwen2-vl-2b); ASK7=(--model random:qwen2-vl-7b)
if [ "$DEVICE" = cpu ]; then  # tiny random-weight models (the 2B / 7B presets would take hours here)
    DEC=(); DT=(--dtype float32)
    ASK_OPTS=(--opt minutes=0.1)
else
    DEC=(--model "random:qwen2-vl-7b:layers=4" --opt tokens=16384); DT=(--dtype bfloat16)
    ASK_OPTS=(--opt minutes=1,10 --opt full_limit=30)
    [ "$QUICK" = 1 ] && ASK_OPTS=(--opt minutes=1)
fi
read -r -a SELECT_X <<<"${SELECT_ARGS:-}"
read -r -a ASK_X <<<"${ASK_ARGS:-}"
read -r -a DEC_X <<<"${DECODER_ARGS:-}"

# one entry of SUITES -> SUITE (the bench suite), SLICE (its seconds), CMD (its flags)
suite_cmd() {
    case $1 in
        select) SUITE=select SLICE=${SELECT_S:-110} CMD=(--suite select "${Q[@]}" "${SELECT_X[@]}") ;;
        ask) SUITE=ask SLICE=${ASK2_S:-120} CMD=(--suite ask "${Q[@]}" "${ASK0[@]}" "${DT[@]}" "${ASK_OPTS[@]}" "${ASK_X[@]}") ;;
        ask-2b) SUITE=ask SLICE=${ASK2_S:-120} CMD=(--suite ask "${Q[@]}" "${ASK2[@]}" "${DT[@]}" "${ASK_OPTS[@]}" "${ASK_X[@]}") ;;
        ask-7b) SUITE=ask SLICE=${ASK7_S:-150} CMD=(--suite ask "${Q[@]}" "${ASK7[@]}" "${DT[@]}" "${ASK_OPTS[@]}" "${ASK_X[@]}") ;;
        gram) SUITE=select SLICE=${GRAM_S:-60} CMD=(--suite select "${Q[@]}" --opt parts=gram "${SELECT_X[@]}") ;;
        decoder) SUITE=decoder SLICE=${DECODER_S:-70} CMD=(--suite decoder "${Q[@]}" "${DEC[@]}" "${DT[@]}" "${DEC_X[@]}") ;;
        *) return 1 ;;
    esac
}

STATUS=$WORK/status.tsv
: > "$STATUS"
for name in $SUITES; do
    suite_cmd "$name" || { say "error: unknown suite $name (select, ask, ask-2b, ask-7b, decoder, gram)"; exit 2; }
    suite=$SUITE slice=$SLICE
    left=$((START + BUDGET_S - $(date +%s) - 30))  # kept: 15 s SIGINT -> SIGKILL grace, the merges
    [ "$slice" -gt "$left" ] && slice=$left
    out=$WORK/$name
    args=(-m streamprune.cli bench "${CMD[@]}" --device "$DEVICE" --out "$out" --json "$WORK/$name.json")
    if [ "$slice" -lt 20 ]; then
        say "skip $name: ${left}s left of the ${BUDGET_S}s budget"
        printf '%s\t%s\tskipped\t0\t-\n' "$name" "$suite" >>"$STATUS"
        continue
    fi
    say "$name (${slice}s): $PY ${args[*]}"
    [ $DRY = 1 ] && continue
    rm -rf "$out" "$WORK/$name.json"
    t0=$(date +%s)
    timeout -k 15 -s INT "$slice" "$PY" "${args[@]}" > "$WORK/$name.stdout" 2> >(tee -a "$LOG" >&2)
    rc=$?
    state=ok
    if [ $rc = 124 ] || [ $rc = 137 ] || [ $rc = 130 ]; then
        state=timed_out
        "$PY" -m streamprune.cli bench merge "$out" > "$WORK/$name.stdout" 2>>"$LOG" || true
    elif [ $rc != 0 ]; then
        state=failed
    fi
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$suite" "$state" "$(( $(date +%s) - t0 ))" "$rc" >>"$STATUS"
    say "$name: $state (rc $rc) in $(( $(date +%s) - t0 ))s"
done
[ $DRY = 1 ] && exit 0

"$PY" - "$WORK" "$RESULTS" "$DEVICE" "$QUICK" "$BUDGET_S" "$(( $(date +%s) - START ))" <<'EOF' 2>&1 | tee -a "$LOG"
import json, sys, platform
from pathlib import Path

work, results, device, quick, budget, elapsed = sys.argv[1:]
work, results = Path(work), Path(results)
doc = {"device": device, "quick": quick == "1", "budget_s": int(budget), "elapsed_s": int(elapsed),
       "host": platform.node(), "suites": {}}
try:
    import torch
    doc["torch"] = torch.__version__
    doc["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
except Exception as e:  # noqa: BLE001 - the merge must not fail on a broken torch
    doc["torch"] = f"unavailable: {e}"
md = [f"# bench/gpu.sh on {doc.get('gpu') or device} ({doc['elapsed_s']} s of a {budget} s budget)", ""]
for line in (work / "status.tsv").read_text().splitlines():
    name, suite, state, seconds, rc = (line.split("\t") + [""] * 5)[:5]
    entry = {"suite": suite, "state": state, "seconds": int(seconds or 0), "rc": rc}
    js, folder = work / f"{name}.json", work / name
    if js.is_file():
        d = json.loads(js.read_text())
        entry.update(rows=d.get("rows", []), options=d.get("options"), missing_units=d.get("missing_units"))
    elif (folder / f"{suite}.jsonl").is_file():  # stopped by its slice: the merged rows of the finished units
        entry["rows"] = [json.loads(x) for x in (folder / f"{suite}.jsonl").read_text().splitlines() if x.strip()]
    else:
        entry["rows"] = []
    doc["suites"][name] = entry
    rep = folder / f"{suite}.md"
    md += [f"<!-- {name}: {state}, {seconds} s, {len(entry['rows'])} rows -->",
           rep.read_text() if rep.is_file() else f"## {name}\n\nno report ({state})\n", ""]
results.mkdir(parents=True, exist_ok=True)
(results / "gpu.json").write_text(json.dumps(doc, indent=1, allow_nan=True) + "\n")
(results / "gpu.md").write_text("\n".join(md))
states = ", ".join("%s %s (%d rows)" % (k, v["state"], len(v["rows"])) for k, v in doc["suites"].items())
print(f"gpu.json: {states} -> {results / 'gpu.json'}")
EOF
