"""TRL SFT of the tiny reasoner on CPU: TRL 1.16's tiled LM-head kernel vs the plain matmul path that
``rgalign_rl.trl_cpu`` installs for CPU tensors. Same model, data and settings, in one process.

    python bench/trl_cpu_sft.py [--world DIR] [--pairs 2000] [--repeats 3] [--batch-size 64]

Without --world it builds the tiny ShopSim world. Reports TRL's own train_samples_per_second (median of
--repeats runs per path) and the ratio.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgalign_rl import trl_cpu  # noqa: E402
from rgalign_rl.reasoner.sft import SFTSettings, sft, warm_start_pairs  # noqa: E402
from rgalign_rl.reasoner.tiny import build_tiny_reasoner  # noqa: E402
from rgalign_rl.world import load_world  # noqa: E402


def samples_per_second(init, world, pairs, out, bs) -> float:
    from transformers import Trainer

    seen = {}
    original = Trainer.log

    def grab(self, logs, *a, **k):
        if "train_samples_per_second" in logs:
            seen["v"] = logs["train_samples_per_second"]
        return original(self, logs, *a, **k)

    Trainer.log = grab
    try:
        sft(init, world, pairs, out, SFTSettings(epochs=1, batch_size=bs, max_pairs=len(pairs), lr=2e-3))
    finally:
        Trainer.log = original
    return float(seen["v"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world")
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    a = ap.parse_args()
    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp())
    if a.world is None:
        from rgalign_rl.world.shopsim.simulator import ShopSimConfig, write_shopsim

        a.world = write_shopsim(tmp / "world", ShopSimConfig(seed=0, size="tiny"))
    world = load_world(a.world)
    init = build_tiny_reasoner(world, tmp / "init")
    pairs = warm_start_pairs(world)[: a.pairs]
    from trl.trainer import utils

    kernel = (utils._ChunkedLogProbFunction, utils._use_triton)
    trl_cpu.install()
    plain = (utils._ChunkedLogProbFunction, utils._use_triton)
    results = {}
    for name, (fn, use_triton) in (("trl_kernel", kernel), ("plain_cpu", plain)):
        utils._ChunkedLogProbFunction, utils._use_triton = fn, use_triton
        results[name] = [samples_per_second(init, world, pairs, tmp / name, a.batch_size) for _ in range(a.repeats)]
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"SFT samples/s, batch {a.batch_size}, {len(pairs)} pairs, median of {a.repeats}: "
          f"TRL kernel {med['trl_kernel']:.1f}, plain CPU path {med['plain_cpu']:.1f}, "
          f"ratio {med['plain_cpu'] / med['trl_kernel']:.2f}x  (runs: {results})")


if __name__ == "__main__":
    main()
