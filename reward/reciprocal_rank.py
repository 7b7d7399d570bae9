"""Expected reciprocal rank of the clicked intents under the frozen ranker: sum_i target_i / rank_i."""
from . import register
from .base import RankerReward, ranks


@register("reciprocal_rank")
class ReciprocalRankReward(RankerReward):
    def score(self, p, target):
        return (target / ranks(p)).sum(-1)
