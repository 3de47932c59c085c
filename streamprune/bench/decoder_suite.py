"""Cost of in-decoder pruning: peak memory and prefill time against plain sdpa and eager attention weights.

    python -m streamprune.bench.decoder_suite [--tokens 4096] [--hidden 1024] [--layers 4] [--device cpu|cuda]

Every arm runs in a fresh subprocess on the same random-weight Qwen2 decoder and the same tokens:
  sdpa         plain forward (the floor)
  side         decoder_prune with keep=1.0: rater side scores only, nothing dropped (the scoring overhead)
  pruned       decoder_prune at --prune-layer with --keep (scores + fewer tokens in later layers)
  eager_layer  sdpa everywhere except the scoring layer, which runs eager and keeps its attention weights
  eager_all    eager attention with output_attentions=True (how peers get the weights)
plus (--interleave N) one process timing sdpa / side / pruned alternately for N rounds, so that the time
ratios see the same machine load (separate processes minutes apart do not, on a shared box).
CPU peak memory is the process high-water mark (VmHWM, reset after the model is built; getrusage fallback;
children run with MALLOC_MMAP_THRESHOLD_=131072 so freed tensors leave RSS);
CUDA uses torch.cuda.max_memory_allocated. Progress goes to stderr, the JSON result to stdout.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import subprocess
import sys
import time

ARMS = ("sdpa", "side", "pruned", "eager_layer", "eager_all")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m streamprune.bench.decoder_suite", description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, default=4096, help="prompt length (visual + text)")
    p.add_argument("--text", type=int, default=96, help="text tokens (32 before the visual span, the rest after)")
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=2816)
    p.add_argument("--prune-layer", type=int, default=2, help="prune before this layer (scores from the one before)")
    p.add_argument("--keep", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=1, help="timed full-length forwards per arm (min is reported)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="float32 (cpu default) or bfloat16 (cuda default)")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--interleave", type=int, default=3,
                   help="rounds of sdpa/side/pruned timed alternately in one process (0: skip); noisy boxes")
    p.add_argument("--arm", default=None, help=argparse.SUPPRESS)  # child mode
    return p


def _status(key: str) -> int:
    m = re.search(key + r":\s+(\d+)\s+kB", open("/proc/self/status").read())
    return int(m.group(1)) * 1024 if m else 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _build(args):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.heads,
                      num_key_value_heads=args.kv_heads, intermediate_size=args.intermediate, vocab_size=4096,
                      max_position_embeddings=max(32768, args.tokens + 16), attn_implementation="sdpa")
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
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


def _interleaved(args) -> dict:
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


def _child(args) -> dict:
    import torch

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
    out = None
    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        hwm_ok = _reset_peak()
        base = _status("VmRSS")
    times, peak = [], None
    for r in range(max(1, args.repeats)):
        t0 = time.perf_counter()
        out, st = forward(ids, vis)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        if r == 0:  # memory of the first full-length forward (allocator reuse would hide later peaks)
            if cuda:
                peak = torch.cuda.max_memory_allocated()
            else:
                import resource

                peak = _status("VmHWM") if hwm_ok else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
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


def _as_namespace(args) -> argparse.Namespace:
    ns = _parser().parse_args([])
    if args is None:
        return ns
    for k, v in (vars(args) if isinstance(args, argparse.Namespace) else dict(args)).items():
        setattr(ns, k.replace("-", "_"), v)
    return ns


def run(args=None) -> dict:
    """Run every arm in its own subprocess; returns {"config", "arms", "overhead_pct"}."""
    from rich.console import Console

    ns = _as_namespace(args)
    arms = [a for a in ns.arms.split(",") if a]
    bad = [a for a in arms if a not in ARMS]
    if bad:
        raise ValueError(f"unknown arm(s) {bad}; choose from {ARMS}")
    if not 1 <= ns.prune_layer < ns.layers:
        raise ValueError(f"--prune-layer must be in 1..{ns.layers - 1}")
    if ns.tokens <= ns.text or ns.text < 33:
        raise ValueError("--tokens must exceed --text, and --text must be >= 33")
    console = Console(stderr=True)
    base_cmd = [sys.executable, "-m", "streamprune.bench.decoder_suite"]
    for k in ("tokens", "text", "hidden", "layers", "heads", "kv_heads", "intermediate", "prune_layer", "keep",
              "repeats", "threads", "device"):
        base_cmd += [f"--{k.replace('_', '-')}", str(getattr(ns, k))]
    if ns.dtype:
        base_cmd += ["--dtype", ns.dtype]
    results = {}
    for arm in arms:
        console.log(f"decoder_suite: arm {arm} ({ns.tokens} tokens, hidden {ns.hidden}, {ns.layers} layers, {ns.device})")
        env = dict(os.environ)
        # glibc: a fixed mmap threshold returns every large tensor to the OS on free, so RSS follows live
        # tensors; the default dynamic threshold keeps freed blocks in the heap and adds +-25 MB of noise
        env.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
        proc = subprocess.run(base_cmd + ["--arm", arm], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            tail = (proc.stderr or "").strip().splitlines()[-1:] or ["no output"]
            results[arm] = {"arm": arm, "error": tail[0]}
            console.log(f"  failed: {tail[0]}")
            continue
        results[arm] = json.loads(proc.stdout.strip().splitlines()[-1])
        r = results[arm]
        console.log(f"  peak {r['peak_mb']:.0f} MB (forward +{r['forward_mb']:.0f} MB), prefill {r['prefill_s']:.2f} s")
    if ns.interleave > 0:
        console.log(f"decoder_suite: interleaved timing, {ns.interleave} rounds of sdpa/side/pruned in one process")
        proc = subprocess.run(base_cmd + ["--interleave", str(ns.interleave), "--arm", "interleaved"],
                              capture_output=True, text=True)
        if proc.returncode == 0:
            results["interleaved"] = json.loads(proc.stdout.strip().splitlines()[-1])
            r = {k: round(v, 3) for k, v in results["interleaved"]["ratio_vs_sdpa"].items()}
            console.log(f"  time vs sdpa (median): {r}")
        else:
            results["interleaved"] = {"error": ((proc.stderr or "").strip().splitlines() or ["no output"])[-1]}
    ref = results.get("sdpa", {})
    overhead = {}
    if "peak_mb" in ref:
        for arm, r in results.items():
            if "peak_mb" in r and "prefill_s" in r:
                overhead[arm] = {"peak_pct": 100 * (r["peak_mb"] / ref["peak_mb"] - 1),
                                 "forward_pct": 100 * (r["forward_mb"] / max(ref["forward_mb"], 1e-9) - 1),
                                 "time_ratio": r["prefill_s"] / ref["prefill_s"]}
    config = {k: getattr(ns, k) for k in ("tokens", "text", "hidden", "layers", "heads", "kv_heads", "intermediate",
                                          "prune_layer", "keep", "repeats", "threads", "device", "dtype",
                                          "interleave")}
    return {"suite": "decoder", "config": config, "arms": results, "overhead_pct": overhead}


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.arm:
        print(json.dumps(_child(args)))
        return 0
    try:
        res = run(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
