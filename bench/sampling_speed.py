"""Sampled generation (Best-of-N and DPO candidates, the probe): transformers' sampling vs TopKSampler.

    python bench/sampling_speed.py REASONER_DIR WORLD_DIR [--n 2048] [--samples 2] [--repeats 3]

Same prompts (the first N training requests), ``--samples`` sampled queries per prompt at temperature 1 and
top-k 50 (what Best-of-N asks for), timed in one process, alternating, median of ``repeats`` each.
transformers draws with torch.multinomial over the whole vocabulary; TopKSampler draws among the 50 kept
tokens. The draws differ (another random stream), so it also prints how often the sampled query equals the
greedy one under each: the same distribution gives about the same share.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgalign_rl.reasoner import model as reasoner_model  # noqa: E402
from rgalign_rl.reasoner.prompt import build_prompts  # noqa: E402
from rgalign_rl.world import load_world  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reasoner")
    ap.add_argument("world")
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(2)
    world = load_world(a.world)
    model, tok = reasoner_model.load_reasoner(a.reasoner)
    prompts = build_prompts(world, world.indices("train")[: a.n], tok)
    greedy = reasoner_model.generate_queries(model, tok, prompts)
    applies = reasoner_model.TopKSampler.applies

    def run(way: str) -> list[str]:
        reasoner_model.TopKSampler.applies = applies if way == "TopKSampler" else classmethod(lambda cls, m, k: False)
        return reasoner_model.generate_queries(model, tok, prompts, do_sample=True, temperature=1.0,
                                               num_return_sequences=a.samples, seed=0)

    times: dict[str, list[float]] = {"transformers": [], "TopKSampler": []}
    same: dict[str, float] = {}
    for _ in range(a.repeats):
        for way in times:
            t = time.perf_counter()
            out = run(way)
            times[way].append(time.perf_counter() - t)
            same[way] = sum(q == greedy[i // a.samples] for i, q in enumerate(out)) / len(out)
    reasoner_model.TopKSampler.applies = applies
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{a.n} prompts x {a.samples} samples, vocabulary {model.config.vocab_size}")
    for k, v in times.items():
        print(f"{k:>12}: median {med[k]:.2f} s of {', '.join(f'{x:.2f}' for x in v)}; "
              f"sampled query = greedy one {100 * same[k]:.1f}%")
    print(f"speed-up: {med['transformers'] / med['TopKSampler']:.2f}x")


if __name__ == "__main__":
    main()
