"""The aligner registry: ``align.algorithm`` in the YAML picks one. Every aligner starts from the RG-SFT
checkpoint, uses the same frozen reward, may spend the same number of reward calls (``reward_budget``)
and is watched by the same probe (reward and KL on fixed valid prompts). Each returns {"path": its
reasoner, "reward_calls": .., "curve": probe points, ...its own stats}."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from .. import dist
from ..config import Annotated, NonNegative, OneOf, Positive
from ..reasoner.model import load_reasoner, load_tokenizer, serving_reasoner
from ..reasoner.prompt import build_prompts
from ..reasoner.tokens import serving_text
from .best_of_n import collect_candidates, score_candidates
from .dpo import DPOSettings, build_preference_pairs, run_dpo
from .online import OnlineSettings, run_online
from .ppo import PPOConfig, PPOTrainer
from .probe import ProbeSettings, RewardProbe, probe_callback


@dataclass
class AlignSettings:
    algorithm: Annotated[str, OneOf(ALIGNERS, "algorithm")] = "dpo"  # dpo | ppo | grpo | rloo (ALIGNERS, below)
    max_requests: Annotated[int, Positive] = 4000  # training requests an aligner may draw prompts from
    # reward calls every aligner may spend (None: each its own settings)
    reward_budget: Annotated[int | None, Positive] = None
    dpo_samples: Annotated[int, NonNegative] = 4  # fresh RG-SFT samples per request added to the DPO candidate pool
    dpo: DPOSettings = field(default_factory=DPOSettings)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    online: OnlineSettings = field(default_factory=OnlineSettings)
    probe: ProbeSettings = field(default_factory=ProbeSettings)


def _requests(loop, rnd: int) -> np.ndarray:
    from .loop import sample_subset

    return sample_subset(loop.world.indices("train"), loop.cfg.align.max_requests, loop.cfg.seed + 100 + rnd)


def _probe(loop, reasoner: str, ranker_dir: str, name: str, ref_tok=None) -> RewardProbe | None:
    """``ref_tok``: the aligner's own frozen (reference, tokenizer) when it holds one, instead of a new load."""
    s = loop.cfg.align.probe
    if s.prompts <= 0:
        return None
    ref, tok = ref_tok or serving_reasoner(reasoner)
    idx = loop.valid[: s.prompts]
    return RewardProbe(loop.reward_fn(ranker_dir), ref, tok, build_prompts(loop.world, idx, tok),
                       [str(loop.world.samples.sample_id[i]) for i in idx], s, loop.cfg.reasoner.max_new_tokens,
                       path=loop.out / f"{name}.probe.jsonl")


def _within_budget(n_candidates: list[int], budget: int | None) -> int:
    """How many requests (in order) fit into ``budget`` reward calls."""
    if budget is None:
        return len(n_candidates)
    return int(np.searchsorted(np.cumsum(n_candidates), budget, side="right"))


def align_dpo(loop, rnd: int, reasoner: str, ranker_dir: str) -> dict:
    s, w = loop.cfg.align, loop.world
    idx = _requests(loop, rnd)
    teachers = collect_candidates(w, idx, [""] * len(idx))  # teacher rows only: sizes the budget cut
    idx = idx[: _within_budget([len(c) + s.dpo_samples for c in teachers], s.reward_budget)]
    model, tok = serving_reasoner(reasoner)  # samples only
    prompts = build_prompts(w, idx, tok)
    cands = collect_candidates(w, idx, prompts, (model, tok), s.dpo_samples, 1.0, loop.cfg.seed + rnd)
    fn = loop.reward_fn(ranker_dir)
    calls = fn.calls
    scores = score_candidates(fn, w, idx, prompts, cands)
    if s.dpo.rejected not in ("own", "any"):
        raise ValueError(f"align.dpo.rejected must be own or any, not {s.dpo.rejected!r}")
    own = [[src == "reasoner" or s.dpo.rejected == "any" for src, _ in c] for c in cands]
    pairs = build_preference_pairs(prompts, [[q for _, q in c] for c in cands], scores, s.dpo.min_margin, own)
    out = loop.out / f"round{rnd}" / "dpo"
    probe = _probe(loop, reasoner, ranker_dir, f"round{rnd}/dpo", ref_tok=(model, tok))  # the sampler is the reference
    hist = run_dpo(reasoner, pairs, out, s.dpo, log_dir=loop.out / f"round{rnd}" / "dpo.trainer",
                   callbacks=[probe_callback(probe)] if probe else None)
    steps = [h for h in hist if "loss" in h]
    return {"path": str(out), "pairs": len(pairs), "reward_calls": int(dist.sum_all(fn.calls - calls)),
            "curve": probe.curve if probe else [],
            "train_log": [{"step": h["step"], "loss": h["loss"], "margin": h.get("rewards/margins")} for h in steps]}


def align_ppo(loop, rnd: int, reasoner: str, ranker_dir: str) -> dict:
    s, w = loop.cfg.align, loop.world
    cfg = s.ppo
    if s.reward_budget is not None:
        cfg = dataclasses.replace(cfg, rollouts=max(1, s.reward_budget // cfg.batch_size))
    idx = _requests(loop, rnd)
    policy, tok = load_reasoner(reasoner)
    ref, _ = serving_reasoner(reasoner)  # it only scores
    rows = [{"prompt": p, "sample_id": str(w.samples.sample_id[i])} for p, i in zip(build_prompts(w, idx, tok), idx)]
    probe = _probe(loop, reasoner, ranker_dir, f"round{rnd}/ppo", ref_tok=(ref, tok))
    fn = loop.reward_fn(ranker_dir)
    trainer = PPOTrainer(policy, ref, tok, fn, rows, cfg, log=lambda st: loop.log({"ppo": st}),
                         probe=probe, probe_every=s.probe.every, checkpoint_every=loop.cfg.log.checkpoint_every,
                         checkpoint_dir=loop.out / f"round{rnd}" / "ppo.trainer" / "checkpoint-last")
    hist = trainer.train()
    out = loop.out / f"round{rnd}" / "ppo"
    trainer.save_policy(out, tok)
    return {"path": str(out), "reward_calls": trainer.reward_calls, "curve": probe.curve if probe else [],
            "train_log": [{"step": h["step"], "reward": h["objective/scores"], "kl": h["objective/kl"]} for h in hist]}


def _align_online(algorithm: str):
    def run(loop, rnd: int, reasoner: str, ranker_dir: str) -> dict:
        import datasets

        s, w = loop.cfg.align, loop.world
        settings = dataclasses.replace(s.online, algorithm=algorithm)
        if s.reward_budget is not None:
            per_step = settings.prompts_per_step * settings.num_generations
            settings = dataclasses.replace(settings, max_steps=max(1, s.reward_budget // per_step))
        idx = _requests(loop, rnd)
        tok = load_tokenizer(reasoner)
        # TRL tokenises the prompt with the tokenizer's special tokens: the serving text (reasoner/tokens.py)
        data = datasets.Dataset.from_dict({"prompt": [serving_text(tok, p) for p in build_prompts(w, idx, tok)],
                                           "sample_id": [str(w.samples.sample_id[i]) for i in idx]})
        out = loop.out / f"round{rnd}" / algorithm
        fn = loop.reward_fn(ranker_dir)
        probe = _probe(loop, reasoner, ranker_dir, f"round{rnd}/{algorithm}")
        hist = run_online(reasoner, fn, data, out, settings, log_dir=loop.out / f"round{rnd}" / f"{algorithm}.trainer",
                          callbacks=[probe_callback(probe)] if probe else None)
        key = f"rewards/{fn.__name__}/mean"
        steps = [h for h in hist if key in h]
        # counted from the steps taken, so that a stage resumed from a checkpoint reports the same number
        calls = max((h["step"] for h in steps), default=0) * settings.prompts_per_step * settings.num_generations
        return {"path": str(out), "reward_calls": calls, "curve": probe.curve if probe else [],
                "train_log": [{"step": h["step"], "reward": h[key], "kl": h.get("kl")} for h in steps]}
    return run


ALIGNERS = {"dpo": align_dpo, "ppo": align_ppo, "grpo": _align_online("grpo"), "rloo": _align_online("rloo")}
