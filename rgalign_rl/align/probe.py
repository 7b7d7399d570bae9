"""One yardstick for every aligner: the frozen reward and the KL to the reference on a fixed probe set.

Each algorithm logs its own quantities (DPO its implicit margins, GRPO its group rewards, PPO its
rollout scores), which are not comparable. The probe samples completions for the same valid prompts
(temperature 1, fixed seed) every ``every`` steps (optimizer steps; rollouts for PPO) and records
their mean reward and the sampled KL to the starting checkpoint, so reward and KL curves line up
across DPO, PPO, GRPO and RLOO.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import dist
from ..config import Annotated, NonNegative, Positive
from ..reasoner.model import generate_queries
from .diagnostics import sampled_kl


@dataclass
class ProbeSettings:
    prompts: Annotated[int, NonNegative] = 128  # valid prompts the probe samples (0 disables the probe)
    every: Annotated[int, Positive] = 10         # steps between probes (optimizer steps; PPO: rollouts)
    seed: Annotated[int, NonNegative] = 0


class RewardProbe:
    def __init__(self, reward_fn, ref_model, tok, prompts: list[str], sample_ids: list[str],
                 settings: ProbeSettings, max_new_tokens: int = 16, path: str | Path | None = None):
        self.reward_fn, self.ref, self.tok = reward_fn, ref_model, tok
        self.prompts, self.sample_ids, self.s = prompts, sample_ids, settings
        self.max_new_tokens = max_new_tokens
        # persisted, so a stage resumed from a trainer checkpoint keeps the points measured before the kill
        self.path = Path(path) if path else None
        self.curve: list[dict] = []
        if self.path and self.path.exists():
            self.curve = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    @torch.no_grad()
    def __call__(self, model, step: int) -> dict | None:
        from ..devices import partitioned

        # ZeRO-3 shards: one process generating alone would wait forever for the others' shards. Asked of the
        # model, not of transformers' global flag (false when PPO, not a TRL trainer, is the run's first).
        if partitioned(model):
            return None  # the curve stays empty
        # one process measures and writes the curve while the others wait for it (they would, in the next step's
        # collectives); what it raises (a diverged policy, a non-finite reward) is raised on every rank
        return dist.on_main(self._forked, model, step)

    def _forked(self, model, step: int) -> dict:
        """The probe must not move the training RNG (a resumed run has to replay the same draws), the CUDA
        generator of this process's device included (manual_seed inside reseeds every device)."""
        device = dist.device()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            return self._probe(model, step)

    def _probe(self, model, step: int) -> dict:
        from ..faults import NonFiniteError

        # the probe runs at a step's end, before the trainer logs that step's loss: a diverged policy is named
        # here, not by a sampling error deep inside generate()
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise NonFiniteError(f"the policy's weights are not finite after step {step}")
        was_training = model.training
        model.eval()
        queries = generate_queries(model, self.tok, self.prompts, do_sample=True, temperature=1.0,
                                   max_new_tokens=self.max_new_tokens, seed=self.s.seed)
        # the probe's reward calls are bookkeeping, not training signal: they don't count in the budget
        calls = getattr(self.reward_fn, "calls", None)
        reward = float(np.mean(self.reward_fn(self.prompts, queries, sample_id=self.sample_ids)))
        if calls is not None:
            self.reward_fn.calls = calls
        kl = sampled_kl(model, self.ref, self.tok, self.prompts, self.max_new_tokens, seed=self.s.seed)
        if was_training:
            model.train()
        point = {"step": int(step), "reward": reward, "kl": float(kl)}
        # a resumed stage re-measures the steps after its checkpoint: the new point replaces the old
        self.curve = [p for p in self.curve if p["step"] < point["step"]] + [point]
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(p) + "\n" for p in self.curve))
            tmp.replace(self.path)
        return point


def probe_callback(probe: RewardProbe):
    """A TRL/transformers callback that runs the probe before training and every ``every`` steps."""
    from transformers import TrainerCallback

    class ProbeCallback(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            if state.global_step == 0 and not any(p["step"] == 0 for p in probe.curve):  # not on resume
                probe(model, 0)

        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step % probe.s.every == 0 or state.global_step == state.max_steps:
                probe(model, state.global_step)

    return ProbeCallback()
