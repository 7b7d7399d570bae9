"""The aligner registry: ``align.algorithm`` in the YAML picks one. Every aligner starts from the RG-SFT
checkpoint, uses the same frozen reward, and returns {"path": its reasoner, ...stats}."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .dpo import DPOSettings, build_preference_pairs, run_dpo
from .online import OnlineSettings, run_online
from .ppo import PPOConfig, PPOTrainer


@dataclass
class AlignSettings:
    algorithm: str = "dpo"              # dpo | ppo | grpo | rloo
    max_requests: int = 4000            # training requests an aligner may draw prompts from
    dpo_samples: int = 4                # fresh RG-SFT samples per request added to the DPO candidate pool
    dpo: DPOSettings = field(default_factory=DPOSettings)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    online: OnlineSettings = field(default_factory=OnlineSettings)


def _requests(loop, rnd: int) -> np.ndarray:
    from .loop import sample_subset

    return sample_subset(loop.world.indices("train"), loop.cfg.align.max_requests, loop.cfg.seed + 100 + rnd)


def align_dpo(loop, rnd: int, reasoner: str, ranker_dir: str) -> dict:
    from ..reasoner.model import load_reasoner
    from ..reasoner.prompt import build_prompts
    from .best_of_n import collect_candidates, score_candidates

    s, w = loop.cfg.align, loop.world
    idx = _requests(loop, rnd)
    model, tok = load_reasoner(reasoner)
    prompts = build_prompts(w, idx, tok)
    cands = collect_candidates(w, idx, prompts, (model, tok), s.dpo_samples, 1.0, loop.cfg.seed + rnd)
    scores = score_candidates(loop.reward_fn(ranker_dir), w, idx, prompts, cands)
    pairs = build_preference_pairs(prompts, [[q for _, q in c] for c in cands], scores, s.dpo.min_margin)
    out = loop.out / f"round{rnd}" / "dpo"
    hist = run_dpo(reasoner, pairs, out, s.dpo, log_dir=loop.out / f"round{rnd}" / "dpo.trainer")
    steps = [h for h in hist if "loss" in h]
    return {"path": str(out), "pairs": len(pairs), "reward_calls": sum(len(c) for c in cands),
            "curve": [{"step": h["step"], "loss": h["loss"], "margin": h.get("rewards/margins")} for h in steps]}


def align_ppo(loop, rnd: int, reasoner: str, ranker_dir: str) -> dict:
    from ..reasoner.model import load_reasoner
    from ..reasoner.prompt import build_prompts

    s, w = loop.cfg.align, loop.world
    idx = _requests(loop, rnd)
    policy, tok = load_reasoner(reasoner)
    ref, _ = load_reasoner(reasoner)
    rows = [{"prompt": p, "sample_id": w.samples[i]["sample_id"]} for p, i in zip(build_prompts(w, idx, tok), idx)]
    trainer = PPOTrainer(policy, ref, tok, loop.reward_fn(ranker_dir), rows, s.ppo, log=lambda st: loop.log({"ppo": st}))
    hist = trainer.train()
    out = loop.out / f"round{rnd}" / "ppo"
    from ..world import atomic_dir

    with atomic_dir(out) as tmp:
        trainer.policy().save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return {"path": str(out), "reward_calls": trainer.reward_calls,
            "curve": [{"step": h["step"], "reward": h["objective/scores"], "kl": h["objective/kl"]} for h in hist]}


def _align_online(algorithm: str):
    def run(loop, rnd: int, reasoner: str, ranker_dir: str) -> dict:
        import dataclasses

        import datasets

        from ..reasoner.model import load_reasoner
        from ..reasoner.prompt import build_prompts

        s, w = loop.cfg.align, loop.world
        idx = _requests(loop, rnd)
        _, tok = load_reasoner(reasoner)
        data = datasets.Dataset.from_dict({"prompt": build_prompts(w, idx, tok),
                                           "sample_id": [w.samples[i]["sample_id"] for i in idx]})
        settings = dataclasses.replace(s.online, algorithm=algorithm)
        out = loop.out / f"round{rnd}" / algorithm
        fn = loop.reward_fn(ranker_dir)
        hist = run_online(reasoner, fn, data, out, settings, log_dir=loop.out / f"round{rnd}" / f"{algorithm}.trainer")
        key = f"rewards/{fn.__name__}/mean"
        steps = [h for h in hist if key in h]
        return {"path": str(out), "reward_calls": settings.max_steps * settings.prompts_per_step * settings.num_generations,
                "curve": [{"step": h["step"], "reward": h[key], "kl": h.get("kl")} for h in steps]}
    return run


ALIGNERS = {"dpo": align_dpo, "ppo": align_ppo, "grpo": _align_online("grpo"), "rloo": _align_online("rloo")}
