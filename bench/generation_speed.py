"""Seconds per query of greedy query generation, of last-token embedding and of the sampled KL an evaluation
reads (align/diagnostics.py; the model against itself: the same work as against a reference), for prompt styles,
head reuse and weight dtypes, side by side in one process on the same requests.

    python bench/generation_speed.py REASONER_DIR WORLD_DIR [--n 256] [--repeats 3] [--max-new-tokens 16]
        [--variants described:float32:whole,legend:float32:whole,legend:float32,legend:bfloat16]

A variant is ``style:dtype[:whole]``: the prompt style (reasoner/prompt.py), the weights' dtype (bfloat16 uses
the CPU's AVX-512 bf16 units where it has them), and ``whole`` to run every prompt whole at its exact length
instead of computing the shared head once (reasoner/prefix.py). The first N test requests; median of
``repeats`` timings; ratios against the first variant; the share of identical queries against the first
variant of the same style. Generation always runs ``max_new_tokens`` tokens (no early stop), so it is
timed at the longest query.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgalign_rl.align.diagnostics import sampled_kl  # noqa: E402
from rgalign_rl.reasoner import prefix  # noqa: E402
from rgalign_rl.reasoner.model import generate_queries, last_token_embedding, load_reasoner  # noqa: E402
from rgalign_rl.reasoner.prompt import build_prompts  # noqa: E402
from rgalign_rl.reasoner.tokens import prompt_ids  # noqa: E402
from rgalign_rl.world import load_world  # noqa: E402

DEFAULT = "described:float32:whole,legend:float32:whole,legend:float32,legend:bfloat16"


def timed(fn, repeats: int):
    runs, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reasoner")
    ap.add_argument("world")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--variants", default=DEFAULT)
    a = ap.parse_args()
    torch.set_num_threads(2)
    world = load_world(a.world)
    model, tok = load_reasoner(a.reasoner)
    model.generation_config.min_new_tokens = a.max_new_tokens  # every query at full length: a fixed workload
    idx = world.indices("test")[: a.n]
    print(f"{a.reasoner} on {a.world}: {len(idx)} test requests, {a.max_new_tokens} new tokens, "
          f"{torch.get_num_threads()} threads, median of {a.repeats}")
    base, first_of_style = None, {}
    for variant in a.variants.split(","):
        style, dtype, *rest = variant.split(":")
        prefix.REUSE_HEADS = "whole" not in rest
        model.to(getattr(torch, dtype))
        prompts = build_prompts(world, idx, tok, style)
        tokens = statistics.median(len(x) for x in prompt_ids(tok, prompts))
        gen_s, queries = timed(lambda: generate_queries(model, tok, prompts, max_new_tokens=a.max_new_tokens), a.repeats)
        emb_s, _ = timed(lambda: last_token_embedding(model, tok, prompts, queries), a.repeats)
        kl_s, _ = timed(lambda: sampled_kl(model, model, tok, prompts, a.max_new_tokens), a.repeats)
        gen_q, emb_q, kl_q = gen_s / len(idx), emb_s / len(idx), kl_s / len(idx)
        base = base or (gen_q, emb_q, kl_q, variant)
        first_of_style.setdefault(style, queries)
        same = sum(x == y for x, y in zip(first_of_style[style], queries)) / len(idx)
        print(f"{variant:32s} prompt {tokens:.0f} tokens | generation {gen_q:.3f} s/query "
              f"({base[0] / gen_q:.2f}x) | last-token embedding {emb_q:.4f} s/query ({base[1] / emb_q:.2f}x) | "
              f"sampled KL {kl_q:.3f} s/prompt ({base[2] / kl_q:.2f}x) | "
              f"identical queries {same:.1%} of the style's first variant")
    prefix.REUSE_HEADS = True


if __name__ == "__main__":
    main()
