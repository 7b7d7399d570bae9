"""Greedy query generation: transformers' default dynamic KV cache vs a static (preallocated) one,
(``--batch-sizes``) the generation batch size, or (``--dtypes``) the weights' dtype (bfloat16 uses the
CPU's AMX/AVX-512 bf16 units where it has them; it changes greedy outputs, hence the identical share).

    python bench/generation_speed.py REASONER_DIR WORLD_DIR [--n 4096] [--repeats 3] [--batch-sizes 256,1024]
                                     [--dtypes float32,bfloat16]

Same prompts (the first N test requests), median of ``repeats`` timings each, run in one process; prints
the share of identical queries beside every ratio.
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
    ap.add_argument("--batch-sizes", help="comma-separated: time the dynamic cache at each batch size instead")
    ap.add_argument("--dtypes", help="comma-separated torch dtypes: time the dynamic cache with each instead")
    a = ap.parse_args()
    torch.set_num_threads(2)
    world = load_world(a.world)
    model, tok = load_reasoner(a.reasoner)
    prompts = build_prompts(world, world.indices("test")[: a.n], tok)
    variants = ([(f"batch {b}", int(b), None) for b in a.batch_sizes.split(",")] if a.batch_sizes else
                [(d, a.batch_size, getattr(torch, d)) for d in a.dtypes.split(",")] if a.dtypes else None)
    if variants:
        base = None
        for name, bs, dtype in variants:
            if dtype is not None:
                model.to(dtype)  # in place: list the saved dtype first
            runs = []
            for _ in range(a.repeats):
                t = time.perf_counter()
                out = generate_queries(model, tok, prompts, batch_size=bs)
                runs.append(time.perf_counter() - t)
            base = base or (statistics.median(runs), out, name)
            same = sum(x == y for x, y in zip(base[1], out)) / len(prompts)
            print(f"{len(prompts)} prompts, {name}: median of {a.repeats} {statistics.median(runs):.2f} s, "
                  f"{base[0] / statistics.median(runs):.2f}x of {base[2]}; identical queries {same:.1%}")
        return
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
