"""Greedy query generation: transformers' default dynamic KV cache vs a static (preallocated) one.

    python bench/generation_speed.py REASONER_DIR WORLD_DIR [--n 4096] [--repeats 3]

Same prompts (the first N test requests), same batch size, median of ``repeats`` timings each, run in
one process; asserts both give the same queries before printing the ratio.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgalign_rl.reasoner.model import generate_queries, load_reasoner  # noqa: E402
from rgalign_rl.reasoner.prompt import build_prompts  # noqa: E402
from rgalign_rl.world import load_world  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reasoner")
    ap.add_argument("world")
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=256)
    a = ap.parse_args()
    torch.set_num_threads(2)
    world = load_world(a.world)
    model, tok = load_reasoner(a.reasoner)
    prompts = build_prompts(world, world.indices("test")[: a.n], tok)
    times, outputs = {}, {}
    for name, cache in (("dynamic", None), ("static", "static")):
        runs = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            outputs[name] = generate_queries(model, tok, prompts, batch_size=a.batch_size, cache_implementation=cache)
            runs.append(time.perf_counter() - t)
        times[name] = statistics.median(runs)
    same = sum(x == y for x, y in zip(outputs["dynamic"], outputs["static"])) / len(prompts)
    print(f"{len(prompts)} prompts, batch {a.batch_size}, median of {a.repeats}: dynamic {times['dynamic']:.2f} s, "
          f"static {times['static']:.2f} s, ratio {times['dynamic'] / times['static']:.2f}x; identical queries {same:.1%}")


if __name__ == "__main__":
    main()
