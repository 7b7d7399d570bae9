"""The loop's preparation steps, before and after session 20's changes, in one process (same inputs, same outputs):

    python bench/prep_speed.py [--repeats 3] [--size small] [--pairs 3000]

- ShopSim's world: candidates drawn with ``np.setdiff1d`` against the picked intents and list draws through
  ``r.choice`` (before) vs a mask over the sorted live intents and ``_pick`` (now), alternating; the files must be
  byte for byte equal.
- SFT examples: TRL's per-example ``Dataset.map`` tokenisation inside ``SFTTrainer`` (before: a prompt/completion
  dataset) vs ``tokens.sft_examples`` in one batched call (now); the input ids and labels must be equal.
- Prompts: ``build_prompts`` over every request of the tiny world, first call (written) vs again (kept per world).

Median of --repeats runs each, and the ratio.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rgalign_rl.world.shopsim.simulator import ShopSim, ShopSimConfig, write_shopsim  # noqa: E402


def setdiff_candidates(sim: ShopSim, k: int, live: np.ndarray, topics: np.ndarray) -> np.ndarray:
    """ShopSim._candidates as it was before session 20."""
    cfg, r = sim.cfg, sim.rng
    picked: list[int] = []
    if r.random() < cfg.recall:
        picked.append(k)
    if sim.partner[k] in live and r.random() < 0.7:
        picked.append(int(sim.partner[k]))
    same = np.setdiff1d(live[topics[live] == topics[k]], picked)
    picked += r.choice(same, min(4, len(same)), replace=False).tolist()
    rest = np.setdiff1d(live, picked)
    w = sim.weight[rest] / sim.weight[rest].sum()
    picked += r.choice(rest, min(6, len(rest)), replace=False, p=w).tolist()
    rest = np.setdiff1d(live, picked)
    picked += r.choice(rest, cfg.n_candidates - len(picked), replace=False).tolist()
    return r.permutation(np.array(picked))


def timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def choice_pick(r: np.random.Generator, seq: list):
    """simulator._pick as it was before session 20: ``r.choice`` of the list (an array built on every call)."""
    return r.choice(seq).item()


def shopsim_world(tmp: Path, size: str, repeats: int) -> None:
    """The world written before (np.setdiff1d, r.choice of lists) and now, alternating; the files must be equal."""
    from unittest import mock

    from rgalign_rl.world.shopsim import simulator

    def write(name, before):
        out = tmp / name
        with ExitStack() as patches:
            if before:
                patches.enter_context(mock.patch.object(simulator.ShopSim, "_candidates", setdiff_candidates))
                patches.enter_context(mock.patch.object(simulator, "_pick", choice_pick))
            t = time.perf_counter()
            write_shopsim(out, ShopSimConfig(seed=0, size=size))
            return time.perf_counter() - t

    times = {"before": [], "now": []}
    for k in range(repeats):
        for kind in ("before", "now"):
            times[kind].append(write(f"{kind}{k}", kind == "before"))
    for f in (tmp / "now0").iterdir():
        assert f.read_bytes() == (tmp / "before0" / f.name).read_bytes(), f"{f.name} differs"
    before, now = statistics.median(times["before"]), statistics.median(times["now"])
    print(f"ShopSim world ({size}, write_shopsim incl. its validation): before {before:.1f} s, now {now:.1f} s, "
          f"{before / now:.2f}x (same files)")


def sft_and_prompts(tmp: Path, n_pairs: int, repeats: int) -> None:
    import datasets
    from trl import SFTConfig, SFTTrainer

    from rgalign_rl.devices import trainer_kwargs
    from rgalign_rl.reasoner.model import load_reasoner
    from rgalign_rl.reasoner.prompt import build_prompts
    from rgalign_rl.reasoner.sft import teacher_pairs
    from rgalign_rl.reasoner.tiny import TinyReasonerConfig, build_tiny_reasoner
    from rgalign_rl.reasoner.tokens import serving_text, sft_examples
    from rgalign_rl.world import load_world

    datasets.disable_progress_bars()
    world = load_world(write_shopsim(tmp / "world", ShopSimConfig(seed=0, size="tiny")))
    model, tok = load_reasoner(build_tiny_reasoner(world, tmp / "init", TinyReasonerConfig(vocab_size=1500)))
    pairs = teacher_pairs(world)[:n_pairs]
    prompts, queries = build_prompts(world, [i for i, _ in pairs], tok), [q for _, q in pairs]
    args = SFTConfig(output_dir=str(tmp / "sft"), max_length=None, **trainer_kwargs())

    def trl_tokenises():
        data = datasets.Dataset.from_dict({"prompt": [serving_text(tok, p) for p in prompts],
                                           "completion": [" " + q for q in queries]})
        return SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok).train_dataset

    def batched():
        return SFTTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_dict(
            sft_examples(tok, prompts, queries)), processing_class=tok).train_dataset

    before, a = timed(trl_tokenises, repeats)
    now, b = timed(batched, repeats)
    assert a["input_ids"] == b["input_ids"] and a["labels"] == b["labels"], "the SFT examples differ"
    print(f"SFT trainer's dataset, {len(pairs)} pairs: TRL per example {before:.2f} s, batched {now:.2f} s, "
          f"{before / now:.1f}x (same ids and labels)")

    idx = np.arange(len(world.samples))
    first = []
    for _ in range(repeats):
        world.derived.clear()
        first.append(timed(lambda: build_prompts(world, idx, tok), 1)[0])
    again, _ = timed(lambda: build_prompts(world, idx, tok), repeats)
    print(f"build_prompts, {len(idx)} requests: written {statistics.median(first):.2f} s, kept {again:.3f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", default="small", help="the ShopSim world's size")
    ap.add_argument("--pairs", type=int, default=3000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        shopsim_world(Path(tmp), a.size, a.repeats)
        sft_and_prompts(Path(tmp), a.pairs, a.repeats)


if __name__ == "__main__":
    main()
