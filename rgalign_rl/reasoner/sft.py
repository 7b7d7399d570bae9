"""Supervised fine-tuning of a reasoner on (prompt, query) pairs with TRL's SFTTrainer.

Used twice: the warm start on all teachers' queries (the general-purpose LLM before alignment) and
RG-SFT on Best-of-N winners (``align/best_of_n.py``, NEFTune on).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import dist
from ..config import Annotated, NonNegative, Positive, Share
from ..devices import last_checkpoint, per_device, save_trainer_model, trainer_kwargs
from ..faults import finite_loss_callback
from ..world import World
from .lora import LoRAFields, lora_config
from .prompt import build_prompts
from .tokens import check_fits, sft_examples


@dataclass
class SFTSettings(LoRAFields):
    epochs: Annotated[float, Positive] = 2.0
    lr: Annotated[float, Positive] = 2e-3
    batch_size: Annotated[int, Positive] = 64
    # cap on training pairs (CPU budget), sampled without replacement; None: all
    max_pairs: Annotated[int | None, Positive] = None
    neftune_noise_alpha: Annotated[float | None, NonNegative] = None
    # None: no truncation (a sequence longer than the model's context is an error naming its request); a cap
    # drops what no longer fits, counted, at most max_dropped
    max_length: Annotated[int | None, Positive] = None
    max_dropped: Annotated[float, Share] = 0.01  # share of training examples a cap may drop before the stage fails
    seed: Annotated[int, NonNegative] = 0
    threads: Annotated[int | None, Positive] = None  # None: the run's budget (loop key `threads`)


def teacher_pairs(world: World, teachers: list[str] | None = None, split: str = "train") -> list[tuple[int, str]]:
    """(sample index, query) for every teacher row of a split; test rows are never read."""
    if split == "test":
        raise ValueError("teacher rows of the test split are never used for training")
    allowed = world.split == split
    return [(i, q) for i, t, q in (world.teachers.rows() if world.teachers else ())
            if allowed[i] and (teachers is None or t in teachers) and q.strip()]


def click_text_pairs(world: World, split: str = "train") -> list[tuple[int, str]]:
    """For worlds without teachers: the text of a request's clicked intents as its target query (train
    clicks only), so the warm start still learns to name what users click."""
    if split == "test":
        raise ValueError("test clicks are never used for training")
    text = {it["intent_id"]: it["text"] for it in world.intents}
    ids, c = world.samples.intent_ids, world.samples.clicked
    return [(int(i), "; ".join(text[ids[k]] for k in c.row(i))) for i in world.indices(split) if c.lengths[i]]


def warm_start_pairs(world: World) -> list[tuple[int, str]]:
    return teacher_pairs(world) if world.teachers else click_text_pairs(world)


def sft(model_path: str | Path, world: World, pairs: list[tuple[int, str]], out: str | Path,
        settings: SFTSettings | None = None, style: str | None = None, log_dir: str | Path | None = None) -> Path:
    """Fine-tunes the model at ``model_path`` on (sample index, query) pairs; saves to ``out``."""
    import datasets
    from trl import SFTConfig, SFTTrainer

    from .model import load_reasoner

    s = settings or SFTSettings()
    dist.set_threads(s.threads)
    rng = np.random.default_rng(s.seed)
    if s.max_pairs is not None and len(pairs) > s.max_pairs:
        pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), s.max_pairs, replace=False))]
    model, tok = load_reasoner(model_path)
    prompts = build_prompts(world, [i for i, _ in pairs], tok, style)
    queries = [q for _, q in pairs]
    # TRL's own tokenisation of prompt-completion pairs, batched (tokens.py): it takes the labelled ids as they are
    examples = sft_examples(tok, prompts, queries)
    check_fits(model, [len(x) for x in examples["input_ids"]], [str(world.samples.sample_id[i]) for i, _ in pairs],
               "the prompt and query")
    data = datasets.Dataset.from_dict(examples)
    del examples  # Python lists of ids are ~4x their Arrow copy
    trainer_dir = str(log_dir or Path(out).with_name(Path(out).name + ".trainer"))
    args = SFTConfig(output_dir=trainer_dir, num_train_epochs=s.epochs, learning_rate=s.lr,
                     per_device_train_batch_size=per_device(s.batch_size, "sft.batch_size"), lr_scheduler_type="cosine", warmup_steps=0.05,
                     logging_steps=50, max_length=s.max_length, neftune_noise_alpha=s.neftune_noise_alpha,
                     seed=s.seed, dataset_num_proc=None, **trainer_kwargs(checkpoints=True))
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok,
                         peft_config=lora_config(s), callbacks=[finite_loss_callback()])
    counts = checked_examples(len(data), len(trainer.train_dataset), s.max_dropped, "SFT")
    trainer.train(resume_from_checkpoint=last_checkpoint(trainer_dir))  # None: from the start
    path = save_trainer_model(trainer, tok, out)
    if dist.is_main():
        (path / "train_examples.json").write_text(json.dumps(counts) + "\n")
    return path


def checked_examples(given: int, kept: int, max_dropped: float, what: str) -> dict:
    """{"given", "trained", "dropped"}; a StageFault when the trainer dropped more than ``max_dropped`` of them
    (a length cap that cuts whole completions away)."""
    from ..faults import StageFault

    counts = {"given": given, "trained": kept, "dropped": given - kept}
    if given and counts["dropped"] / given > max_dropped:
        raise StageFault(f"{what} would drop {counts['dropped']} of {given} training examples (> {max_dropped:.0%}): "
                         "raise or unset its max_length")
    return counts
