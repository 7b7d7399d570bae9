"""Score margin: target-weighted log-probability of the clicked intents minus the best other
candidate's, squashed by tanh into (-1, 1)."""
import torch

from . import register
from .base import RankerReward


@register("margin")
class MarginReward(RankerReward):
    def score(self, p, target):
        logp = torch.log(p.clamp(min=1e-9))
        pos = (target * logp).sum(-1)
        neg = logp.masked_fill(target > 0, -30.0).max(-1).values
        has = target.sum(-1) > 0
        return torch.where(has, torch.tanh((pos - neg) / float(self.options.get("scale", 2.0))), torch.zeros(()))
