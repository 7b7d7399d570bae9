"""NDCG@k of the frozen ranker's order, with the denoised click target as graded gains."""
import torch

from . import register
from .base import RankerReward, ranks


@register("ndcg")
class NDCGReward(RankerReward):
    def score(self, p, target):
        k = int(self.options.get("k", 3))
        r = ranks(p)
        disc = torch.where(r <= k, 1.0 / torch.log2(r.float() + 1), torch.zeros(()))
        dcg = (target * disc).sum(-1)
        best = torch.sort(target, dim=-1, descending=True).values[:, :k]
        idcg = (best / torch.log2(torch.arange(2, best.shape[1] + 2).float())).sum(-1)
        return torch.where(idcg > 0, dcg / idcg.clamp(min=1e-12), torch.zeros(()))
