"""A ranker written outside rgalign_rl: a logistic model over hashed (feature, intent) crosses.

Plug it into the loop as the production ranker, which QE-Rec then nests in:

    PYTHONPATH=examples rgalign run --config recipes/configs/shopsim_tiny.yaml --out runs/byo \\
        ranker.class=my_ranker:MyRanker

It follows the ranker protocol (rgalign_rl/ranker/protocol.py, docs/rankers-and-rewards.md): built as
``MyRanker(cfg, text_emb)``, it scores each request's candidates from the encoded features. Given a query
(with ``ranker.nest: false`` QE-Rec is the class itself) it adds the query's cosine with each candidate's text.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

BUCKETS = 1 << 18  # hashed (feature value, intent) crosses
FIELD = 1 << 20    # a token is field * FIELD + value code; behaviour events are one more field


class MyRanker(nn.Module):
    def __init__(self, cfg, text_emb: torch.Tensor):
        super().__init__()
        self.cfg = cfg                                                  # sizes: n_intents, query_dim, ...
        self.register_buffer("text_emb", text_emb.float())             # [K, T] the intents' text vectors
        self.weight = nn.Embedding(BUCKETS, 1)                          # one logistic weight per hashed cross
        self.bias = nn.Embedding(cfg.n_intents, 1)                      # each intent's popularity
        nn.init.zeros_(self.weight.weight)
        nn.init.zeros_(self.bias.weight)
        self.query_scale = nn.Parameter(torch.tensor(5.0)) if cfg.query_text else None

    def forward(self, x, behavior, cand, query=None) -> torch.Tensor:
        """x [B, F] field codes, behavior [B, M] event codes (0: none), cand [B, C] intents -> scores [B, C]."""
        fields = torch.arange(x.shape[1], device=x.device) * FIELD + x
        events = x.shape[1] * FIELD + behavior
        tokens = torch.cat([fields, events], 1)                                             # [B, N]
        present = torch.cat([torch.ones_like(x), (behavior > 0).long()], 1).float()         # [B, N]
        crosses = (tokens.unsqueeze(1) * 1_000_003 + cand.unsqueeze(2) * 7_919) % BUCKETS  # [B, C, N]
        score = (self.weight(crosses).squeeze(-1) * present.unsqueeze(1)).sum(-1) + self.bias(cand).squeeze(-1)
        if query is not None and self.query_scale is not None:
            text = F.normalize(query[:, -self.cfg.query_text:], dim=-1)  # the query's text-encoder vector
            score = score + self.query_scale * (text.unsqueeze(1) * self.text_emb[cand]).sum(-1)
        return score
