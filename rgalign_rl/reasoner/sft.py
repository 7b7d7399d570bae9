"""Supervised fine-tuning of a reasoner on (prompt, query) pairs with TRL's SFTTrainer.

Used twice: the warm start on all teachers' queries (the general-purpose LLM before alignment) and
RG-SFT on Best-of-N winners (``align/best_of_n.py``, NEFTune on).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import dist
from ..devices import last_checkpoint, per_device, save_trainer_model, trainer_kwargs
from ..faults import finite_loss_callback
from ..world import World
from .prompt import build_prompts


@dataclass
class SFTSettings:
    epochs: float = 2.0
    lr: float = 2e-3
    batch_size: int = 64
    max_pairs: int | None = None  # cap on training pairs (CPU budget), sampled without replacement; None: all
    neftune_noise_alpha: float | None = None
    max_length: int = 128
    seed: int = 0
    threads: int = 2


def teacher_pairs(world: World, teachers: list[str] | None = None, split: str = "train") -> list[tuple[int, str]]:
    """(sample index, query) for every teacher row of a split; test rows are never read."""
    if split == "test":
        raise ValueError("teacher rows of the test split are never used for training")
    allowed = {world.samples[i]["sample_id"]: i for i in world.indices(split)}
    return [(allowed[t["sample_id"]], t["query"]) for t in world.teachers or []
            if t["sample_id"] in allowed and (teachers is None or t["teacher"] in teachers) and t["query"].strip()]


def click_text_pairs(world: World, split: str = "train") -> list[tuple[int, str]]:
    """For worlds without teachers: the text of a request's clicked intents as its target query (train
    clicks only), so the warm start still learns to name what users click."""
    if split == "test":
        raise ValueError("test clicks are never used for training")
    text = {it["intent_id"]: it["text"] for it in world.intents}
    return [(int(i), "; ".join(text[c] for c in world.samples[i]["clicked"]))
            for i in world.indices(split) if world.samples[i]["clicked"]]


def warm_start_pairs(world: World) -> list[tuple[int, str]]:
    return teacher_pairs(world) if world.teachers else click_text_pairs(world)


def sft(model_path: str | Path, world: World, pairs: list[tuple[int, str]], out: str | Path,
        settings: SFTSettings | None = None, style: str | None = None, log_dir: str | Path | None = None) -> Path:
    """Fine-tunes the model at ``model_path`` on (sample index, query) pairs; saves to ``out``."""
    import datasets
    import torch
    from trl import SFTConfig, SFTTrainer

    from .model import load_reasoner

    s = settings or SFTSettings()
    dist.set_threads(s.threads)
    rng = np.random.default_rng(s.seed)
    if s.max_pairs is not None and len(pairs) > s.max_pairs:
        pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), s.max_pairs, replace=False))]
    model, tok = load_reasoner(model_path)
    prompts = build_prompts(world, [i for i, _ in pairs], tok, style)
    data = datasets.Dataset.from_dict({"prompt": prompts, "completion": [" " + q for _, q in pairs]})
    trainer_dir = str(log_dir or Path(out).with_name(Path(out).name + ".trainer"))
    args = SFTConfig(output_dir=trainer_dir, num_train_epochs=s.epochs, learning_rate=s.lr,
                     per_device_train_batch_size=per_device(s.batch_size, "sft.batch_size"), lr_scheduler_type="cosine", warmup_steps=0.05,
                     logging_steps=50, max_length=s.max_length, neftune_noise_alpha=s.neftune_noise_alpha,
                     seed=s.seed, dataset_num_proc=None, **trainer_kwargs(checkpoints=True))
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok,
                         callbacks=[finite_loss_callback()])
    trainer.train(resume_from_checkpoint=last_checkpoint(trainer_dir))  # None: from the start
    return save_trainer_model(trainer, tok, out)
