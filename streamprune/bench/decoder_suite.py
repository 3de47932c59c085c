"""Cost of in-decoder pruning: peak memory and prefill time against plain sdpa and eager attention weights.

    streamprune bench --suite decoder --quick
    streamprune bench --suite decoder --model random:qwen2-vl-2b --device cuda --opt tokens=16384

Every arm is one unit run in a fresh subprocess on the same random-weight Qwen2 decoder and the same tokens:
  sdpa         plain forward (the floor)
  side         decoder_prune with keep=1.0: rater side scores only, nothing dropped (the scoring overhead)
  pruned       decoder_prune at `prune_layer` with `keep` (scores + fewer tokens in later layers)
  eager_layer  sdpa everywhere except the scoring layer, which runs eager and keeps its attention weights
  eager_all    eager attention with output_attentions=True (how peers get the weights)
plus (interleave=N) one process timing sdpa / side / pruned alternately for N rounds, so that the time
ratios see the same machine load (separate processes minutes apart do not, on a shared box).
--model: tiny (default: a small 4-layer decoder; smaller under --quick) or random:PRESET (the preset's LLM
widths and depth, e.g. random:qwen2-vl-2b or random:qwen2-vl-7b:layers=4); hidden/layers/... override.
CPU peak memory is the process high-water mark (streamprune.memprobe: VmHWM, reset after the model is
built; children run with MALLOC_MMAP_THRESHOLD_=131072 so freed tensors leave RSS); CUDA uses
torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

from .protocol import Option, SuiteOptions, model_kind, parse_preset, positive, strs
from .report import markdown_table
from .runner import Unit

ARMS = ("sdpa", "side", "pruned", "eager_layer", "eager_all")
TITLE = "decoder: in-decoder pruning vs plain sdpa and eager attention weights (peak memory, prefill time)"
TINY = dict(hidden=1024, layers=4, heads=16, kv_heads=4, intermediate=2816)
TINY_QUICK = dict(hidden=256, layers=4, heads=4, kv_heads=2, intermediate=704)
OPTIONS = (
    Option("tokens", positive(int), 4096, "prompt length (visual + text)", quick_default=1024),
    Option("text", positive(int), 96, "text tokens (32 before the visual span, the rest after)"),
    Option("hidden", positive(int), None, "decoder width (default: from --model)"),
    Option("layers", positive(int), None, "decoder layers (default: from --model)"),
    Option("heads", positive(int), None, "attention heads (default: from --model)"),
    Option("kv_heads", positive(int), None, "key/value heads (default: from --model)"),
    Option("intermediate", positive(int), None, "MLP width (default: from --model)"),
    Option("prune_layer", positive(int), 2, "prune before this layer (scores from the one before)"),
    Option("keep", positive(float), 0.5, "fraction of visual tokens kept"),
    Option("repeats", positive(int), 1, "timed full-length forwards per arm (min is reported)"),
    Option("arms", strs, list(ARMS), "comma-separated arms"),
    Option("interleave", int, 3, "rounds of sdpa/side/pruned timed alternately in one process (0: skip)",
           quick_default=1),
)


@dataclass
class Config:
    """What one child process builds and measures."""

    tokens: int
    text: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    prune_layer: int
    keep: float
    repeats: int
    threads: int
    device: str
    dtype: str | None
    interleave: int
    arm: str = "sdpa"


def shape(model: str | None, quick: bool) -> dict:
    """Decoder widths for --model: the tiny defaults, or a preset's LLM (random weights)."""
    kind, value = model_kind(model)
    if kind == "tiny":
        return dict(TINY_QUICK if quick else TINY)
    if kind == "random":
        from streamprune.models import PRESETS

        name, over = parse_preset(value)
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        pr = PRESETS[name]
        return dict(hidden=pr["hidden"], layers=over.get("layers", pr["layers"]), heads=pr["heads"], kv_heads=pr["kv"],
                    intermediate=pr["inter"])
    raise ValueError(f"the decoder suite builds a random-weight Qwen2 decoder: --model tiny or random:PRESET, "
                     f"not {model!r}")


def config(opts: SuiteOptions) -> Config:
    x = opts.extra
    dims = shape(opts.model, opts.quick)
    dims.update({k: x[k] for k in dims if x.get(k) is not None})
    cfg = Config(tokens=x["tokens"], text=x["text"], prune_layer=x["prune_layer"], keep=x["keep"],
                 repeats=x["repeats"], threads=opts.threads or 0, device=opts.device or "cpu", dtype=opts.dtype,
                 interleave=x["interleave"], **dims)
    bad = [a for a in x["arms"] if a not in ARMS]
    if bad:
        raise ValueError(f"unknown arm(s) {', '.join(bad)}; choose from {', '.join(ARMS)}")
    if not 1 <= cfg.prune_layer < cfg.layers:
        raise ValueError(f"prune_layer must be in 1..{cfg.layers - 1}")
    if cfg.tokens <= cfg.text or cfg.text < 33:
        raise ValueError("tokens must exceed text, and text must be >= 33")
    return cfg


def _build(args: Config):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
                      num_key_value_heads=args.kv_heads, intermediate_size=args.intermediate, vocab_size=4096,
                      max_position_embeddings=max(32768, args.tokens + 16), attn_implementation="sdpa")
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
    with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's global RNG
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(cfg).to(device=args.device, dtype=dtype).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 4096, (1, args.tokens), generator=g).to(args.device)  # (1, L)
    vis = torch.zeros(1, args.tokens, dtype=torch.bool, device=args.device)
    vis[0, 32:args.tokens - (args.text - 32)] = True
    return model, ids, vis


def _eager_layer_fn(score_layer: int):
    """sdpa everywhere, eager (weights kept, as peers do) at the scoring layer."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.models.qwen2.modeling_qwen2 import eager_attention_forward

    kept = []

    def fn(module, query, key, value, attention_mask, *a, **kw):
        if module.layer_idx == score_layer:
            out, w = eager_attention_forward(module, query, key, value, attention_mask, *a, **kw)
            kept.append(w)  # (B, H, L, L)
            return out, w
        return sdpa_attention_forward(module, query, key, value, attention_mask, *a, **kw)

    return fn, kept


def _interleaved(args: Config) -> dict:
    """Prefill times of sdpa / side / pruned taken alternately in one process (same load for all)."""
    import torch

    from streamprune.models.decoder_prune import DecoderPruneConfig, decoder_prune

    if args.threads:
        torch.set_num_threads(args.threads)
    model, ids, vis = _build(args)
    am = torch.ones_like(ids)

    def fwd(keep):
        with torch.no_grad():
            if keep is None:
                model(input_ids=ids, attention_mask=am, use_cache=False, logits_to_keep=1)
            else:
                with decoder_prune(model, DecoderPruneConfig(layers=(args.prune_layer,), keep=(keep,)), vis):
                    model(input_ids=ids, attention_mask=am, use_cache=False, logits_to_keep=1)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    arms = {"sdpa": None, "side": 1.0, "pruned": args.keep}
    fwd(None)  # warm-up at full length
    times = {a: [] for a in arms}
    for r in range(args.interleave):
        for a, keep in (arms.items() if r % 2 == 0 else reversed(arms.items())):
            t0 = time.perf_counter()
            fwd(keep)
            times[a].append(time.perf_counter() - t0)
    med = {a: sorted(t)[len(t) // 2] for a, t in times.items()}
    return {"arm": "interleaved", "times_s": times, "median_s": med,
            "ratio_vs_sdpa": {a: med[a] / med["sdpa"] for a in arms}}


def _child(args: Config) -> dict:
    import torch

    from streamprune.memprobe import PeakMemory, rss_mb

    if args.arm == "interleaved":
        return _interleaved(args)

    from streamprune.models.decoder_prune import DecoderPruneConfig, decoder_prune

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    model, ids, vis = _build(args)
    arm = args.arm
    extra = {}
    if arm == "eager_all":
        model.config._attn_implementation = "eager"
        extra = {"output_attentions": True}
    elif arm == "eager_layer":
        from transformers import AttentionInterface, AttentionMaskInterface
        from transformers.masking_utils import eager_mask

        fn, kept = _eager_layer_fn(args.prune_layer - 1)
        AttentionInterface.register("sp_bench_eager_layer", fn)
        AttentionMaskInterface.register("sp_bench_eager_layer", eager_mask)
        model.config._attn_implementation = "sp_bench_eager_layer"
    keep = {"side": 1.0, "pruned": args.keep}.get(arm)

    def forward(x, v):
        with torch.no_grad():
            if keep is None:
                out = model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False, logits_to_keep=1, **extra)
                return out, None
            with decoder_prune(model, DecoderPruneConfig(layers=(args.prune_layer,), keep=(keep,)), v) as st:
                out = model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=False, logits_to_keep=1)
            return out, st

    n_warm = min(256, args.tokens)
    forward(ids[:, :n_warm], vis[:, :n_warm])  # warm-up on a short prompt
    if arm == "eager_layer":
        kept.clear()
    peak_probe = PeakMemory(None)  # the process's peak RSS (CUDA is read directly below)
    out = None
    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        peak_probe.reset()
        base = rss_mb() * 2**20
    times, peak = [], None
    for r in range(max(1, args.repeats)):
        t0 = time.perf_counter()
        out, st = forward(ids, vis)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        if r == 0:  # memory of the first full-length forward (allocator reuse would hide later peaks)
            peak = torch.cuda.max_memory_allocated() if cuda else peak_probe.mb() * 2**20
        del out
        if arm == "eager_layer":
            kept.clear()
    res = {"arm": arm, "prefill_s": min(times), "times_s": times, "peak_mb": peak / 2**20,
           "forward_mb": (peak - base) / 2**20, "base_mb": base / 2**20}
    if st is not None:
        res["kept_visual"] = st.kept[args.prune_layer][0]
        res["visual"] = st.visual_in[0]
        res["raters"] = int(st.raters[0].numel())
    return res


def plan(opts: SuiteOptions) -> list[Unit]:
    cfg = dataclasses.asdict(config(opts))
    arms = list(opts.extra["arms"]) + (["interleaved"] if cfg["interleave"] > 0 else [])
    return [Unit(f"decoder/{a}", {**cfg, "arm": a, "model": opts.model or "tiny"}) for a in arms]


def run_unit(unit: Unit, opts: SuiteOptions) -> list[dict]:
    """One arm in a fresh subprocess (`python -m streamprune.bench.decoder_suite CONFIG_JSON`)."""
    from rich.console import Console

    p = dict(unit.params)
    model = p.pop("model")
    cfg = Config(**p)
    Console(stderr=True).log(f"decoder: arm {cfg.arm} ({cfg.tokens} tokens, hidden {cfg.hidden}, {cfg.layers} "
                             f"layers, {cfg.device})")
    env = dict(os.environ)
    # glibc: a fixed mmap threshold returns every large tensor to the OS on free, so RSS follows live
    # tensors; the default dynamic threshold keeps freed blocks in the heap and adds +-25 MB of noise
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
    proc = subprocess.run([sys.executable, "-m", "streamprune.bench.decoder_suite", json.dumps(dataclasses.asdict(cfg))],
                          capture_output=True, text=True, env=env)
    base = {"model": model, "tokens": cfg.tokens, "hidden": cfg.hidden, "layers": cfg.layers, "device": cfg.device,
            "keep": cfg.keep, "prune_layer": cfg.prune_layer}
    if proc.returncode != 0:
        tail = ((proc.stderr or "").strip().splitlines() or ["no output"])[-1]
        return [{**base, "arm": cfg.arm, "error": tail}]
    return [{**base, **json.loads(proc.stdout.strip().splitlines()[-1])}]


def report(rows: list[dict], opts: SuiteOptions) -> str:
    ref = next((r for r in rows if r.get("arm") == "sdpa" and "peak_mb" in r), None)
    cells = []
    for r in rows:
        if r.get("arm") == "interleaved" or "peak_mb" not in r:
            continue
        over = ("", "", "")
        if ref is not None:
            over = (f"{100 * (r['peak_mb'] / ref['peak_mb'] - 1):+.1f}",
                    f"{100 * (r['forward_mb'] / max(ref['forward_mb'], 1e-9) - 1):+.1f}",
                    f"{r['prefill_s'] / ref['prefill_s']:.3f}")
        cells.append([r["arm"], f"{r['peak_mb']:.0f}", f"{r['forward_mb']:.0f}", f"{r['prefill_s']:.3f}", *over,
                      r.get("kept_visual", "")])
    lines = [f"## {TITLE}", ""]
    if rows:
        r0 = rows[0]
        lines += [f"model {r0['model']}: {r0['tokens']} tokens, hidden {r0['hidden']}, {r0['layers']} layers, "
                  f"{r0['device']}; prune before layer {r0['prune_layer']}, keep {r0['keep']}", ""]
    lines.append(markdown_table(["arm", "peak MB", "forward MB", "prefill s", "peak vs sdpa %", "forward vs sdpa %",
                                 "time vs sdpa", "kept visual"], cells))
    for r in rows:
        if r.get("arm") == "interleaved" and "ratio_vs_sdpa" in r:
            ratios = ", ".join(f"{a} {v:.3f}" for a, v in r["ratio_vs_sdpa"].items())
            lines += ["", f"interleaved in one process ({len(r['times_s']['sdpa'])} rounds, median): time vs sdpa: "
                          f"{ratios}"]
    lines += ["", "- wall time; other work may share the cores"]
    for r in rows:
        if "error" in r:
            lines.append(f"- arm {r['arm']} failed: {r['error']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Child entry: one JSON Config on argv, one JSON result line on stdout."""
    argv = sys.argv[1:] if argv is None else argv
    print(json.dumps(_child(Config(**json.loads(argv[0])))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
