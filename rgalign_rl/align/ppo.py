"""PPO for the reasoner: a compact actor-critic on accelerate (TRL removed its PPOTrainer in 1.13).

One rollout = sample a completion per prompt, score it with the reward (the same callable every aligner
uses), and fold a KL-to-reference penalty into the per-token reward (fixed or adaptive coefficient).
Then ``ppo_epochs`` passes over the rollout in minibatches with GAE advantages, the clipped policy loss
and the clipped value loss. The critic is a value head on the policy's last hidden state. Metrics carry
the names TRL's PPO logged (objective/kl, objective/scores, policy/clipfrac, loss/value, ...).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import devices, dist
from ..config import Annotated, NonNegative, Positive, Share
from ..faults import check_finite
from ..reasoner.lora import LoRAFields, with_lora
from ..reasoner.tokens import padded, positions, prompt_ids


@dataclass
class PPOConfig(LoRAFields):
    learning_rate: Annotated[float, Positive] = 1e-4
    rollouts: Annotated[int, Positive] = 20        # rollout/update iterations
    batch_size: Annotated[int, Positive] = 32      # prompts per rollout
    mini_batch_size: Annotated[int, Positive] = 16
    ppo_epochs: Annotated[int, Positive] = 4
    max_new_tokens: Annotated[int, Positive] = 16
    temperature: Annotated[float, Positive] = 1.0
    gamma: Annotated[float, Share] = 1.0
    lam: Annotated[float, Share] = 0.95
    clip_range: Annotated[float, Positive] = 0.2
    clip_range_value: Annotated[float, Positive] = 0.2
    vf_coef: Annotated[float, NonNegative] = 0.1
    kl_coef: Annotated[float, NonNegative] = 0.05
    adaptive_kl: bool = False       # adapt kl_coef towards target_kl (Ziegler et al.)
    target_kl: Annotated[float, Positive] = 1.0
    kl_horizon: Annotated[int, Positive] = 1000
    whiten_rewards: bool = False
    max_grad_norm: Annotated[float, Positive] = 1.0
    seed: Annotated[int, NonNegative] = 0


class PolicyWithValueHead(nn.Module):
    """A causal LM plus a scalar value head on its last hidden state."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm
        self.value_head = nn.Linear(lm.config.hidden_size, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def __getattr__(self, name):
        # generation helpers (TRL's unwrap_model_for_generation) query LM attributes on the wrapper
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("lm"), name)

    def forward(self, input_ids, attention_mask):
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions(attention_mask),
                      output_hidden_states=True)
        return out.logits, self.value_head(out.hidden_states[-1]).squeeze(-1)


def response_mask(response: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """1.0 on generated tokens up to and including the first EOS, 0.0 after it."""
    is_eos = response == eos_token_id
    return ((is_eos.cumsum(1) - is_eos.long()) == 0).float()


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    return torch.gather(F.log_softmax(logits.float(), dim=-1), 2, tokens.unsqueeze(-1)).squeeze(-1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    return out if shift_mean else out + mean


def gae(rewards, values, mask, gamma: float, lam: float):
    """Generalised advantage estimation over response tokens; returns (advantages, returns)."""
    T = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    last = torch.zeros(rewards.shape[0])
    for t in reversed(range(T)):
        next_v = values[:, t + 1] * mask[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        adv[:, t] = last
    return adv, adv + values


class PPOTrainer:
    """``prompts`` is a list of dicts with a ``prompt`` string and the columns the reward needs."""

    def __init__(self, policy, ref_model, tokenizer, reward_fn, prompts: list[dict], config: PPOConfig,
                 accelerator=None, log=None, probe=None, probe_every: int = 10, checkpoint_dir=None,
                 checkpoint_every: int = 0):
        from accelerate import Accelerator

        self.cfg, self.tok, self.reward_fn, self.prompts = config, tokenizer, reward_fn, prompts
        bf16 = devices.train_bf16()
        # cpu=True would make accelerate drop DeepSpeed: under a DeepSpeed launch the process group is gloo on CPU
        # already (dist.state), as TRL's trainers leave it
        self.acc = accelerator or Accelerator(cpu=not torch.cuda.is_available() and not devices.deepspeed_launch(),
                                              mixed_precision="bf16" if bf16 else "no")
        if devices.gradient_checkpointing():  # non-reentrant: works with frozen inputs (LoRA) as well
            policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model = PolicyWithValueHead(with_lora(policy, config))
        self.ref = ref_model.eval()
        for p in self.ref.parameters():
            p.requires_grad_(False)
        opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=config.learning_rate)
        n = self.acc.num_processes
        devices.per_device(config.batch_size, "align.ppo.batch_size")  # ranks with unequal shares would hang
        per_rank = devices.per_device(config.mini_batch_size, "align.ppo.mini_batch_size")
        ds = devices.deepspeed_plugin(self.acc)
        if ds is not None:
            # No dataloader to infer DeepSpeed's "auto" sizes from, and a TRL trainer earlier in this process
            # left its own numbers in the shared plugin: state all three, and the precision, for this loop.
            ds.deepspeed_config.update(train_micro_batch_size_per_gpu=per_rank, gradient_accumulation_steps=1,
                                       train_batch_size=per_rank * n)
            ds.deepspeed_config.update(bf16={"enabled": bf16}, fp16={"enabled": False})
        self.model, self.opt = self.acc.prepare(self.model, opt)
        self.ref = self.ref.to(self.acc.device)
        self.kl_coef = config.kl_coef
        self.rng = np.random.default_rng(config.seed)
        self.log = log or (lambda stats: None)
        self.history: list[dict] = []
        self.reward_calls = 0
        self.probe, self.probe_every = probe, probe_every
        # checkpoint cadence in rollouts (checkpoint_every counts optimizer steps, as for TRL trainers)
        steps_per_rollout = config.ppo_epochs * -(-config.batch_size // config.mini_batch_size)
        self.ckpt_dir = checkpoint_dir
        self.ckpt_every = max(1, checkpoint_every // steps_per_rollout) if checkpoint_every > 0 else 0
        if ds is not None:
            self.ckpt_every = 0  # DeepSpeed shards the optimizer: its own checkpointing would be needed

    # ---- rollout -------------------------------------------------------------------------------
    @torch.no_grad()
    def rollout(self, rows: list[dict]) -> dict:
        from trl.models.utils import unwrap_model_for_generation

        tok, cfg = self.tok, self.cfg
        x, attn = padded(prompt_ids(tok, [r["prompt"] for r in rows]), tok.pad_token_id, "left", self.acc.device)
        enc = {"input_ids": x, "attention_mask": attn}
        with unwrap_model_for_generation(self.model, self.acc) as unwrapped:
            seq = unwrapped.lm.generate(**enc, do_sample=True, temperature=cfg.temperature, top_k=0, top_p=1.0,
                                        max_new_tokens=cfg.max_new_tokens, pad_token_id=tok.pad_token_id,
                                        eos_token_id=tok.eos_token_id)
        P = enc["input_ids"].shape[1]
        response = seq[:, P:]
        rmask = response_mask(response, tok.eos_token_id)
        attn = torch.cat([enc["attention_mask"], rmask.long()], dim=1)
        self.model.eval()
        logits, values = self.model(seq, attn)
        logp = token_logprobs(logits[:, P - 1 : -1], response)
        ref_logits = self.ref(input_ids=seq, attention_mask=attn, position_ids=positions(attn)).logits
        ref_logp = token_logprobs(ref_logits[:, P - 1 : -1], response)
        values = values[:, P - 1 : -1]
        texts = tok.batch_decode(response, skip_special_tokens=True)
        columns = {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}
        # a fault in this rank's completions (a non-finite reward) is raised on every rank: the next collective
        # would otherwise wait for this one until the timeout
        scores = torch.tensor(dist.raise_together(self.reward_fn, [r["prompt"] for r in rows],
                                                  [t.strip() for t in texts], **columns), dtype=torch.float32)
        kl = (logp - ref_logp) * rmask
        rewards = -self.kl_coef * kl
        last = (rmask.sum(1).long() - 1).clamp(min=0)
        rewards[torch.arange(len(rows)), last] += scores.to(rewards.device)
        if self.cfg.whiten_rewards:
            rewards = masked_whiten(rewards, rmask, shift_mean=False)
        adv, returns = gae(rewards.cpu(), values.cpu(), rmask.cpu(), self.cfg.gamma, self.cfg.lam)
        adv = masked_whiten(adv, rmask.cpu())
        return {"seq": seq, "attn": attn, "P": P, "response": response, "rmask": rmask, "logp": logp,
                "values": values, "adv": adv.to(seq.device), "returns": returns.to(seq.device),
                "scores": scores, "kl": kl.sum(1), "texts": texts}

    # ---- update --------------------------------------------------------------------------------
    def update(self, ro: dict) -> list[dict]:
        """ppo_epochs passes over the rollout; returns the stats of every minibatch (the first one is
        computed before any parameter update: ratio 1, approx-KL 0, clip fraction 0)."""
        cfg, n, P = self.cfg, ro["seq"].shape[0], ro["P"]
        out = []
        self.model.train()
        mb = cfg.mini_batch_size // self.acc.num_processes  # this process's share of a minibatch
        for _ in range(cfg.ppo_epochs):
            perm = self.rng.permutation(n)
            for start in range(0, n, mb):
                j = torch.as_tensor(perm[start : start + mb])
                m = ro["rmask"][j]
                logits, v = self.model(ro["seq"][j], ro["attn"][j])
                logp = token_logprobs(logits[:, P - 1 : -1], ro["response"][j])
                v = v[:, P - 1 : -1]
                ratio = torch.exp(logp - ro["logp"][j])
                adv = ro["adv"][j]
                pg = masked_mean(torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range)), m)
                v_clip = ro["values"][j] + (v - ro["values"][j]).clamp(-cfg.clip_range_value, cfg.clip_range_value)
                vf = 0.5 * masked_mean(torch.max((v - ro["returns"][j]) ** 2, (v_clip - ro["returns"][j]) ** 2), m)
                loss = pg + cfg.vf_coef * vf
                self.opt.zero_grad()
                self.acc.backward(loss)
                if cfg.max_grad_norm:
                    self.acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                self.opt.step()
                with torch.no_grad():
                    log_ratio = logp - ro["logp"][j]
                    out.append({"policy/ratio": masked_mean(ratio, m).item(),
                                "policy/approxkl": masked_mean(0.5 * log_ratio ** 2, m).item(),
                                "policy/clipfrac": masked_mean(((ratio - 1).abs() > cfg.clip_range).float(), m).item(),
                                "loss/policy": pg.item(), "loss/value": vf.item()})
        return out

    def train(self) -> list[dict]:
        cfg = self.cfg
        start = self.load_checkpoint()
        if self.probe and start == 0:
            self.probe(self.policy(), 0)
        for step in range(start, cfg.rollouts):
            # every rank draws the same batch (one seed) and rolls out its own share of it: disjoint prompts,
            # gradients averaged by the engine
            chosen = self.rng.choice(len(self.prompts), cfg.batch_size, replace=False)
            ro = self.rollout([self.prompts[i] for i in chosen[self.acc.process_index :: self.acc.num_processes]])
            self.reward_calls += len(chosen)  # completions scored by all ranks together
            mb = self.update(ro)
            kl = ro["kl"].mean().item()
            stats = {"step": step + 1, "objective/kl": kl, "objective/kl_coef": self.kl_coef,
                     "objective/scores": ro["scores"].mean().item(),
                     "objective/rlhf_reward": ro["scores"].mean().item() - self.kl_coef * kl,
                     "objective/entropy_proxy": -ro["logp"].sum(1).mean().item(),
                     "val/mean_length": ro["rmask"].sum(1).mean().item(), "reward_calls": self.reward_calls,
                     **{k: float(np.mean([s[k] for s in mb])) for k in mb[0]}}
            if cfg.adaptive_kl:  # proportional controller on the KL (Ziegler et al. 2019)
                err = np.clip(kl / cfg.target_kl - 1, -0.2, 0.2)
                self.kl_coef *= 1 + err * cfg.batch_size / cfg.kl_horizon
            self.history.append(stats)
            self.log(stats)
            if self.probe and ((step + 1) % self.probe_every == 0 or step + 1 == cfg.rollouts):
                self.probe(self.policy(), step + 1)
            if self.ckpt_every and (step + 1) % self.ckpt_every == 0 and step + 1 < cfg.rollouts:
                self.save_checkpoint(step + 1)
            # each rank's own minibatches' loss: a NaN on one rank is raised on all
            dist.raise_together(check_finite, stats["loss/policy"], f"the PPO policy loss at rollout {step + 1}")
        return self.history

    # ---- resumable checkpoints: weights, optimizer, RNG streams, KL controller, history ------------
    def save_checkpoint(self, step: int) -> None:
        import json

        from safetensors.torch import save_model

        from ..world import atomic_dir

        if not self.acc.is_main_process:  # one writer; the replicas' weights and optimizer are the main's
            self.acc.wait_for_everyone()
            return
        with atomic_dir(self.ckpt_dir) as tmp:
            save_model(self.acc.unwrap_model(self.model), str(tmp / "model.safetensors"))  # handles tied weights
            torch.save({"optimizer": self.opt.state_dict(), "torch_rng": torch.get_rng_state()}, tmp / "optimizer.pt")
            (tmp / "state.json").write_text(json.dumps({
                "step": step, "kl_coef": self.kl_coef, "reward_calls": self.reward_calls,
                "history": self.history, "numpy_rng": self.rng.bit_generator.state}))
        self.acc.wait_for_everyone()

    def load_checkpoint(self) -> int:
        import json
        from pathlib import Path

        from safetensors.torch import load_model

        if not self.ckpt_every or not self.ckpt_dir or not (Path(self.ckpt_dir) / "state.json").exists():
            return 0
        d = Path(self.ckpt_dir)
        load_model(self.acc.unwrap_model(self.model), str(d / "model.safetensors"))
        extra = torch.load(d / "optimizer.pt", weights_only=True)
        self.opt.load_state_dict(extra["optimizer"])
        torch.set_rng_state(extra["torch_rng"])
        st = json.loads((d / "state.json").read_text())
        self.kl_coef, self.reward_calls, self.history = st["kl_coef"], st["reward_calls"], st["history"]
        self.rng.bit_generator.state = st["numpy_rng"]
        return st["step"]

    def policy(self):
        return self.acc.unwrap_model(self.model).lm

    def save_policy(self, out, tok):
        """The policy without its value head (gathered from its shards under ZeRO-3; LoRA merged), tokenizer,
        engine.json."""
        return devices.save_trained(self.acc, self.policy(), tok, out)
