"""The shared machinery of ranker rewards: batching, shaping and the finite check."""
from __future__ import annotations

import math

import torch


def completion_text(c) -> str:
    """TRL passes plain strings, or conversational completions as lists of messages."""
    if isinstance(c, str):
        return c
    if isinstance(c, list) and c and isinstance(c[-1], dict):
        return c[-1].get("content", "")
    return str(c)


def is_degenerate(text: str) -> bool:
    """Empty, or mostly one repeated word ("c cancelled cancelled cancelled ...")."""
    words = text.split()
    if not words:
        return True
    return len(words) >= 4 and len(set(words)) / len(words) < 0.5


class RankerReward:
    """Base class: subclasses implement ``score(p, target)`` -> [B] from the frozen ranker's candidate
    distribution ``p`` [B, C] and the denoised click target [B, C]."""

    name = "ranker_reward"

    def __init__(self, scorer, empty_penalty: float = -1.0, max_words: int = 16, overlong_penalty: float = 0.5,
                 degenerate_penalty: float = 0.5, **score_options):
        self.scorer = scorer
        self.empty_penalty, self.max_words = empty_penalty, max_words
        self.overlong_penalty, self.degenerate_penalty = overlong_penalty, degenerate_penalty
        self.options = score_options
        self.calls = 0  # completions scored so far: aligners spend and report a budget of these
        self.__name__ = self.name  # TRL logs reward functions by __name__

    def score(self, p: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, prompts, completions, sample_id=None, **columns) -> list[float]:
        if sample_id is None:
            raise ValueError(f"reward {self.name}: the dataset needs a 'sample_id' column")
        texts = [completion_text(c).strip() for c in completions]
        self.calls += len(texts)
        prompts = [completion_text(p) for p in prompts]
        idx = self.scorer.indices(sample_id)
        p = self.scorer.distribution(idx, prompts, texts)
        rewards = self.score(p, self.scorer.target(idx)).tolist()
        out = []
        for sid, text, r in zip(sample_id, texts, rewards):
            n = len(text.split())
            if n == 0:
                r = self.empty_penalty
            else:
                r -= self.overlong_penalty * max(0, n - self.max_words) / self.max_words
                r -= self.degenerate_penalty * is_degenerate(text)
            if not math.isfinite(r):
                from rgalign_rl.faults import NonFiniteError

                raise NonFiniteError(f"reward {self.name} is not finite ({r}) for sample_id {sid!r}, query {text!r}")
            out.append(float(r))
        return out


def ranks(p: torch.Tensor) -> torch.Tensor:
    """1-based rank of every candidate under ``p`` (ties broken by position)."""
    order = torch.argsort(p, dim=-1, descending=True, stable=True)
    r = torch.empty_like(order)
    r.scatter_(1, order, torch.arange(1, p.shape[1] + 1).expand_as(order).contiguous())
    return r
