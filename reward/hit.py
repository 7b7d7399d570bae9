"""Hit@k: the target mass that the frozen ranker places in its top k (k = 3 suggestions on screen)."""
from . import register
from .base import RankerReward, ranks


@register("hit")
class HitReward(RankerReward):
    def score(self, p, target):
        k = int(self.options.get("k", 3))
        return (target * (ranks(p) <= k)).sum(-1)
