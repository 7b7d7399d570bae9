"""Completions scored per second: the batched reward vs a naive per-sample loop over the same ranker.

    python bench/reward_throughput.py [--world DIR --ranker DIR] [--n 256] [--repeats 5] [--workload W]

Without --world/--ranker it builds the tiny ShopSim world and a QE-Rec on teacher atlas's queries.
Workloads: ``teacher`` = n random training teacher queries (mostly distinct texts); ``grpo`` = n/8
training prompts x 8 samples from a briefly warm-started tiny reasoner (a GRPO batch: many repeats).
Every path scores the same (prompt, completion, sample_id) triples in the same process. The baseline is the naive
call (one completion at a time, float32 PyTorch text encoder); each --backends encoder is timed batched against
it (median of --repeats interleaved runs), with its rewards' distance from float32 PyTorch's (onnx must be within
1e-3), its own one-at-a-time time, and the time of the text encoder alone.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import reward  # noqa: E402
from rgalign_rl.scoring import FrozenRankerScorer, ScorerConfig  # noqa: E402
from rgalign_rl.world import load_world  # noqa: E402


def setup(tmp: Path):
    from rgalign_rl.ranker.queries import query_embeddings
    from rgalign_rl.ranker.train import TrainConfig, save_ranker, train_ranker
    from rgalign_rl.world.shopsim.simulator import ShopSimConfig, write_shopsim

    world_dir = write_shopsim(tmp / "world", ShopSimConfig(seed=0, size="tiny"))
    world = load_world(world_dir)
    q = query_embeddings(world, "teacher:atlas")
    model, enc, _ = train_ranker(world, "qe_rec", q, TrainConfig(epochs=4), log=lambda *a: None)
    return world_dir, save_ranker(tmp / "ranker", model, enc, {"queries": "teacher:atlas", "query_mode": "text"})


def grpo_batch(world, tmp: Path, n_prompts: int, rng):
    from rgalign_rl.reasoner.model import generate_queries, load_reasoner
    from rgalign_rl.reasoner.prompt import build_prompts
    from rgalign_rl.reasoner.sft import SFTSettings, sft, teacher_pairs
    from rgalign_rl.reasoner.tiny import build_tiny_reasoner

    init = build_tiny_reasoner(world, tmp / "reasoner_init")
    warm = sft(init, world, teacher_pairs(world), tmp / "reasoner", SFTSettings(epochs=2, max_pairs=3000, batch_size=32, lr=5e-3))
    model, tok = load_reasoner(warm)
    idx = rng.choice(world.indices("train"), n_prompts, replace=False)
    prompts = build_prompts(world, idx, tok)
    comps = generate_queries(model, tok, prompts, do_sample=True, num_return_sequences=8, seed=0)
    return ([world.samples[i]["sample_id"] for i in idx for _ in range(8)], comps, [p for p in prompts for _ in range(8)])


def median_times(fns: dict, repeats: int) -> dict[str, float]:
    """Median wall time of each function over ``repeats`` interleaved runs."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--world")
    ap.add_argument("--ranker")
    ap.add_argument("--reward", default="clicked_prob")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workload", choices=["teacher", "grpo"], default="teacher")
    ap.add_argument("--backends", default="torch,onnx,onnx_int8", type=lambda s: s.split(","),
                    help="the completions' text encoders to time batched (reward.scorer.text_encoder)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    os.environ.setdefault("RGALIGN_CACHE", str(tmp / "cache"))
    world_dir, ranker_dir = (args.world, args.ranker) if args.world else setup(tmp)
    world = load_world(world_dir)
    scorer = FrozenRankerScorer(world, ranker_dir, ScorerConfig())
    r = reward.build_reward({"name": args.reward}, scorer)
    rng = np.random.default_rng(0)
    train_ids = {world.samples[i]["sample_id"] for i in world.indices("train")}
    if args.workload == "teacher":
        rows = [t for t in world.teachers if t["sample_id"] in train_ids]
        pick = [rows[i] for i in rng.choice(len(rows), args.n, replace=False)]
        sids, comps, prompts = [t["sample_id"] for t in pick], [t["query"] for t in pick], [""] * args.n
    else:
        sids, comps, prompts = grpo_batch(world, tmp, args.n // 8, rng)
    from rgalign_rl import text_encoder

    base_cfg = scorer.cfg
    r(prompts, comps, sample_id=sids)  # the scorer's own texts (intents, teacher queries) are in memory from here
    print(f"{len(set(comps))} distinct texts among {len(comps)} completions; "
          f"{len(set(comps) & set(text_encoder._MEMORY))} of them in the process's memory (read, not encoded, by "
          "torch and onnx; onnx_int8 encodes every completion)")

    def call(backend, one_by_one=False):
        scorer.cfg = replace(base_cfg, text_encoder=backend)
        if one_by_one:
            return np.array([r([p], [c], sample_id=[s])[0] for p, c, s in zip(prompts, comps, sids)])
        return np.asarray(r(prompts, comps, sample_id=sids))

    ref = call("torch")
    assert np.allclose(ref, call("torch", True), atol=1e-4), "the two paths must compute the same rewards"
    fns = {"naive": lambda: call("torch", True)}
    for b in args.backends:
        call(b)  # an ONNX backend exports (once per cache folder) and loads its session outside the timing
        fns[b] = lambda b=b: call(b)
        if b != "torch":
            fns[f"naive {b}"] = lambda b=b: call(b, True)
    med = median_times(fns, args.repeats)
    print(f"reward {args.reward}, {args.n} completions, {args.threads} threads, median of {args.repeats} runs")
    print(f"  naive: one completion per call, float32 PyTorch encoder (the baseline) {med['naive']:.3f} s")
    for b in args.backends:
        got = call(b)
        d = np.abs(got - ref)
        line = (f"  batched, {b:9s} {med[b]:.3f} s  {args.n / med[b]:8.1f} completions/s  ratio {med['naive'] / med[b]:5.1f}x"
                f"  |reward - torch's| max {d.max():.1e} mean {d.mean():.1e}")
        if b != "torch":
            line += f"  (naive {b}: {med[f'naive {b}']:.3f} s, {med[f'naive {b}'] / med[b]:.1f}x)"
        if args.workload == "grpo":  # the sample each prompt's group of 8 would pick (Best-of-N, GRPO's best)
            line += f"  same best of 8: {np.mean(got.reshape(-1, 8).argmax(1) == ref.reshape(-1, 8).argmax(1)):.0%}"
        print(line)
        if b == "onnx":
            assert d.max() <= 1e-3, f"onnx rewards differ from float32 PyTorch's by {d.max():.2e} (> 1e-3)"
    encode_texts = text_encoder.encode_texts
    enc = median_times({b: lambda b=b: encode_texts(comps, cache=False, backend=b) for b in args.backends}, args.repeats)
    print("  text encoder alone on the batch: " + ", ".join(f"{b} {t:.3f} s" for b, t in enc.items()))
    # the same two paths with the text encoder's output precomputed: what batching does for the rest
    import rgalign_rl.scoring as scoring

    table = dict(zip(comps, encode_texts(comps, cache=False)))
    real = scoring.encode_texts
    scoring.encode_texts = lambda texts, cache=False, backend=None: np.stack([table[t] for t in texts])
    try:
        med = median_times({"batched": lambda: call("torch"), "naive": lambda: call("torch", True)}, args.repeats)
    finally:
        scoring.encode_texts = real
    print(f"  without the text encoder: batched {med['batched']:.3f} s, naive {med['naive']:.3f} s, "
          f"ratio {med['naive'] / med['batched']:.1f}x")


if __name__ == "__main__":
    main()
