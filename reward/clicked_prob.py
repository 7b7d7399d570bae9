"""Probability the frozen ranker gives the (denoised) clicked intents: sum_i target_i * p_i."""
from . import register
from .base import RankerReward


@register("clicked_prob")
class ClickedProbReward(RankerReward):
    def score(self, p, target):
        return (p * target).sum(-1)
