"""GRPO and RLOO through TRL, driven by the same reward object as every other aligner.

Both sample ``num_generations`` completions per prompt and use the group as the baseline: GRPO
normalises rewards within the group (beta = 0: no KL by default), RLOO uses the leave-one-out mean and
puts its KL in the reward (beta = 0.05).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import dist
from ..config import AtLeast, Annotated, NonNegative, OneOf, Positive, Share
from ..faults import finite_loss_callback
from ..reasoner.lora import LoRAFields, lora_config
from ..devices import last_checkpoint, per_device, save_trainer_model, trainer_kwargs


@dataclass
class OnlineSettings(LoRAFields):
    algorithm: Annotated[str, OneOf(("grpo", "rloo"))] = "grpo"
    max_steps: Annotated[int, Positive] = 40
    learning_rate: Annotated[float, Positive] = 1e-4
    # per_device_train_batch_size = prompts_per_step * num_generations
    prompts_per_step: Annotated[int, Positive] = 8
    num_generations: Annotated[int, AtLeast(2)] = 4  # a group: GRPO and RLOO compare a prompt's completions
    max_completion_length: Annotated[int, Positive] = 16
    temperature: Annotated[float, Positive] = 1.0
    beta: Annotated[float | None, NonNegative] = None  # None: TRL's default (GRPO 0.0, RLOO 0.05)
    seed: Annotated[int, NonNegative] = 0
    threads: Annotated[int | None, Positive] = None  # None: the run's budget (loop key `threads`)
    # generation through vLLM (TRL's use_vllm; GPUs only, untested here): colocate (in the trainer's processes)
    # | server (a separate `trl vllm-serve`)
    use_vllm: bool = False
    vllm_mode: Annotated[str, OneOf(("colocate", "server"))] = "colocate"
    vllm_gpu_memory_utilization: Annotated[float, Share] = 0.3


def run_online(model_path: str | Path, reward_fn, dataset, out: str | Path, s: OnlineSettings | None = None,
               log_dir: str | Path | None = None, callbacks=None):
    """``dataset`` has a ``prompt`` column and the columns the reward reads (``sample_id``).
    Returns the log history (rewards/<name>/mean, kl, ... per step)."""
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    from ..reasoner.model import load_reasoner

    s = s or OnlineSettings()
    dist.set_threads(s.threads)
    trainers = {"grpo": (GRPOConfig, GRPOTrainer), "rloo": (RLOOConfig, RLOOTrainer)}
    if s.algorithm not in trainers:
        raise ValueError(f"unknown online algorithm {s.algorithm!r}: grpo or rloo")
    config_cls, trainer_cls = trainers[s.algorithm]
    model, tok = load_reasoner(model_path)
    extra = {} if s.beta is None else {"beta": s.beta}
    if s.use_vllm:
        extra.update(use_vllm=True, vllm_mode=s.vllm_mode, vllm_gpu_memory_utilization=s.vllm_gpu_memory_utilization)
    trainer_dir = str(log_dir or Path(out).with_name(Path(out).name + ".trainer"))
    args = config_cls(output_dir=trainer_dir, max_steps=s.max_steps, learning_rate=s.learning_rate,
                      per_device_train_batch_size=per_device(s.prompts_per_step, "align.online.prompts_per_step")
                      * s.num_generations,
                      num_generations=s.num_generations, max_completion_length=s.max_completion_length,
                      temperature=s.temperature, logging_steps=1, seed=s.seed,
                      **extra, **trainer_kwargs(checkpoints=True))
    # TRL scores each rank's completions and gathers them: a fault on one rank is raised on all (dist.together)
    trainer = trainer_cls(model=model, reward_funcs=dist.together(reward_fn), args=args, train_dataset=dataset,
                          processing_class=tok, peft_config=lora_config(s),
                          callbacks=[finite_loss_callback(), *(callbacks or [])])
    trainer.train(resume_from_checkpoint=last_checkpoint(trainer_dir))  # None: from the start
    save_trainer_model(trainer, tok, out)
    return trainer.state.log_history
