"""The rankers: the production two-tower baseline and QE-Rec, its query-enhanced three-tower extension.

Two-tower: a user tower (one embedding per feature field + the behaviour bag, AutoInt-style
self-attention across fields, a mixture-of-experts head) and an intent tower (id embedding + projected
text embedding); score = <user, intent> + intent bias.

QE-Rec adds a query tower on the reasoner's query embedding and mutual attention among the three
towers' outputs for each (request, candidate). Beside it, a low-capacity path lets the query meet the
intents directly (bilinear query x intent-text term): a query only mixed into the user tower overfits
and is ignored even when it is perfect (DESIGN.md section 6).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class RankerConfig:
    arch: str = "two_tower"              # two_tower | qe_rec
    cardinalities: list[int] = field(default_factory=list)
    behavior_vocab: int = 1
    n_intents: int = 0
    text_dim: int = 384
    query_dim: int = 0                   # 0 for the two-tower
    dim: int = 32                        # field / tower width
    attn_layers: int = 1
    attn_heads: int = 2
    experts: int = 4
    dropout: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)


class UserTower(nn.Module):
    def __init__(self, cfg: RankerConfig):
        super().__init__()
        d = cfg.dim
        # one table for all fields (offsets), so a batch is a single lookup
        self.register_buffer("offsets", torch.tensor([0] + cfg.cardinalities[:-1]).cumsum(0), persistent=False)
        self.fields = nn.Embedding(sum(cfg.cardinalities), d)
        self.behavior = nn.EmbeddingBag(cfg.behavior_vocab, d, mode="mean", padding_idx=0)
        self.attn = nn.ModuleList(nn.MultiheadAttention(d, cfg.attn_heads, dropout=cfg.dropout, batch_first=True)
                                  for _ in range(cfg.attn_layers))
        flat = d * (len(cfg.cardinalities) + 1)
        self.gate = nn.Linear(flat, cfg.experts)
        self.experts = nn.ModuleList(nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(flat, 2 * d), nn.ReLU(),
                                                   nn.Linear(2 * d, d)) for _ in range(cfg.experts))

    def forward(self, x: torch.Tensor, behavior: torch.Tensor) -> torch.Tensor:
        h = torch.cat([self.fields(x + self.offsets), self.behavior(behavior).unsqueeze(1)], dim=1)  # [B, F+1, d]
        for attn in self.attn:                                          # AutoInt: fields attend to fields
            h = F.relu(h + attn(h, h, h, need_weights=False)[0])
        flat = h.flatten(1)
        gate = torch.softmax(self.gate(flat), dim=-1)                   # [B, E]
        out = torch.stack([e(flat) for e in self.experts], dim=1)       # [B, E, d]
        return (gate.unsqueeze(-1) * out).sum(1)


class IntentTower(nn.Module):
    def __init__(self, cfg: RankerConfig, text_emb: torch.Tensor):
        super().__init__()
        self.register_buffer("text_emb", text_emb.float())              # frozen encoder output [K, 384]
        self.ids = nn.Embedding(cfg.n_intents, cfg.dim)
        nn.init.normal_(self.ids.weight, std=0.01)                      # cold intents lean on their text
        self.text = nn.Linear(cfg.text_dim, cfg.dim)
        self.bias = nn.Embedding(cfg.n_intents, 1)
        nn.init.zeros_(self.bias.weight)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ids(ids) + self.text(self.text_emb[ids]), self.bias(ids).squeeze(-1)


class TwoTowerRanker(nn.Module):
    def __init__(self, cfg: RankerConfig, text_emb: torch.Tensor):
        super().__init__()
        self.cfg = cfg
        self.user = UserTower(cfg)
        self.intent = IntentTower(cfg, text_emb)

    def forward(self, x, behavior, cand, query=None) -> torch.Tensor:
        """Scores [B, C] of candidate intent ids ``cand`` [B, C] (padding may hold any valid id)."""
        u = self.user(x, behavior)
        i, b = self.intent(cand)
        return (u.unsqueeze(1) * i).sum(-1) + b

    def user_embedding(self, x, behavior) -> torch.Tensor:
        return self.user(x, behavior)


class QERecRanker(TwoTowerRanker):
    def __init__(self, cfg: RankerConfig, text_emb: torch.Tensor):
        super().__init__(cfg, text_emb)
        d = cfg.dim
        self.query = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.query_dim, d))
        self.mutual = nn.MultiheadAttention(d, cfg.attn_heads, dropout=cfg.dropout, batch_first=True)
        self.head = nn.Sequential(nn.Linear(3 * d, d), nn.ReLU(), nn.Linear(d, 1))
        # low capacity on purpose: one projection of the query into the intents' text space
        self.query_to_text = nn.Linear(cfg.query_dim, cfg.text_dim, bias=False)
        self.match_scale = nn.Parameter(torch.tensor(5.0))

    @torch.no_grad()
    def start_from_baseline(self) -> None:
        """Zero the query paths' outputs: the model then scores exactly like its two-tower part."""
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)
        self.match_scale.zero_()

    def forward(self, x, behavior, cand, query=None) -> torch.Tensor:
        u = self.user(x, behavior)                                       # [B, d]
        i, b = self.intent(cand)                                         # [B, C, d]
        q = self.query(query)                                            # [B, d]
        B, C, d = i.shape
        towers = torch.stack([u.unsqueeze(1).expand(B, C, d), i, q.unsqueeze(1).expand(B, C, d)], dim=2)
        mixed = towers + self.mutual(*(towers.reshape(B * C, 3, d),) * 3, need_weights=False)[0].reshape(B, C, 3, d)
        interaction = self.head(mixed.flatten(2)).squeeze(-1)            # [B, C]
        qt = F.normalize(self.query_to_text(query), dim=-1)
        match = self.match_scale * (qt.unsqueeze(1) * self.intent.text_emb[cand]).sum(-1)
        return (u.unsqueeze(1) * i).sum(-1) + b + interaction + match


ARCHS = {"two_tower": TwoTowerRanker, "qe_rec": QERecRanker}


def build_ranker(cfg: RankerConfig, text_emb: torch.Tensor) -> TwoTowerRanker:
    if cfg.arch not in ARCHS:
        raise ValueError(f"unknown ranker arch {cfg.arch!r}; choose one of {', '.join(ARCHS)}")
    return ARCHS[cfg.arch](cfg, text_emb)
