"""How well the frozen ranker ranks the (denoised) click target given this query: the target-weighted AUC.

For each request, sum_a target_a x (share of the request's other candidates ranked below a, ties half): the
probability that a candidate drawn from the target outranks a uniformly drawn other candidate. It reads only
the ranker's order, so a query earns what it changes in the ranking (DESIGN.md s.9), not how close its text
is to an intent's: with ``reward.scorer.anchor_weight: 0`` (the default) the distribution is the ranker's
alone. Padding candidates (probability 0 after masking) take no part.
"""
import torch

from . import register
from .base import RankerReward


@register("target_auc")
class TargetAUCReward(RankerReward):
    def score(self, p, target):
        valid = p > 0
        above = (p.unsqueeze(2) > p.unsqueeze(1)) & valid.unsqueeze(1)          # [B, a, b]: a ranked over b
        ties = (p.unsqueeze(2) == p.unsqueeze(1)) & valid.unsqueeze(1)
        ties = ties & ~torch.eye(p.shape[1], dtype=torch.bool, device=p.device)  # a candidate does not tie itself
        others = (valid.sum(-1, keepdim=True) - 1).clamp(min=1)
        share_below = (above.sum(-1) + 0.5 * ties.sum(-1)) / others              # [B, C]
        return (target * share_below * valid).sum(-1)
