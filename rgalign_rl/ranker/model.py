"""The rankers: the production two-tower baseline and QE-Rec, its query-enhanced three-tower extension.

Two-tower: a user tower (one embedding per feature field + the behaviour bag, AutoInt-style
self-attention across fields, a mixture-of-experts head) and an intent tower (id embedding + projected
text embedding); score = <user, intent> + intent bias.

QE-Rec adds a query tower on the reasoner's query embedding and mutual attention among the three
towers' outputs for each (request, candidate). Beside it, a low-capacity path lets the query meet the
intents directly (bilinear query x intent-text term): a query only mixed into the user tower overfits
and is ignored even when it is perfect (DESIGN.md section 6).

Gated QE-Rec (the loop's default, ``qe_rec_gated``): the two-tower score plus a query term scaled by a
gate read from how sure the query is; nested in a trained two-tower with its towers frozen, it can only
add to the baseline on valid. Ablations (BENCHMARKS.md section 1): the nesting and the query's text
vector carry the gain over the two-tower; the gate fixed open scores the same.

QERecOnTop: the same gated query term over any ranker's score (a ``ranker.class`` of one's own, see
ranker/protocol.py), the ranker frozen inside it as ``base``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

SCALE_GAIN = 10.0  # the gated QE-Rec's query-term scale moves this many times Adam's step (see GatedQERecRanker)

@dataclass
class RankerConfig:
    arch: str = "two_tower"              # two_tower | qe_rec | qe_rec_gated
    cardinalities: list[int] = field(default_factory=list)
    behavior_vocab: int = 1
    n_intents: int = 0
    text_dim: int = 384
    query_dim: int = 0                   # 0 for the two-tower
    query_text: int = 0                  # trailing query dims that are the text encoder's vector (text / both)
    dim: int = 32                        # field / tower width
    attn_layers: int = 1
    attn_heads: int = 2
    experts: int = 4
    dropout: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)


def self_attention(attn: nn.MultiheadAttention, h: torch.Tensor) -> torch.Tensor:
    """``attn(h, h, h)`` without dropout (eval) through fused scaled-dot-product attention: ~1.7x the module's own
    path on CPU for ~90 fields of width 32 (its batched matmuls of [92 x 16] blocks run at ~14 GFLOP/s), which is
    most of embedding millions of requests (the reward's neighbour bank). Same weights, equal to ~1e-7."""
    assert attn._qkv_same_embed_dim and attn.bias_k is None and not attn.add_zero_attn, "a plain self-attention"
    B, L, E = h.shape
    H = attn.num_heads
    q, k, v = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).view(B, L, 3, H, E // H).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, L, E)
    return F.linear(out, attn.out_proj.weight, attn.out_proj.bias)


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
            h = F.relu(h + (attn(h, h, h, need_weights=False)[0] if self.training else self_attention(attn, h)))
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
    BASELINE = ("user.", "intent.")  # the parameters a nested QE-Rec keeps frozen (the two-tower part)

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

    @property
    def text_emb(self) -> torch.Tensor:
        """[K, T] the intents' text vectors (the ranker protocol's; not a second copy in the state)."""
        return self.intent.text_emb


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


def _text_identity(query_to_text: nn.Linear, cfg: RankerConfig) -> None:
    """A query's text vector starts as its own cosine with the intents' text (when the query carries one)."""
    if cfg.query_text == cfg.text_dim:
        with torch.no_grad():
            query_to_text.weight.zero_()
            query_to_text.weight[:, -cfg.text_dim:] = torch.eye(cfg.text_dim)


def _query_input(query: torch.Tensor, cfg: RankerConfig) -> torch.Tensor:
    """What the bilinear query term reads: the query's text vector when it has one, else the whole query."""
    return query[:, query.shape[1] - cfg.query_text :] if cfg.query_text else query


def _confidence(every: torch.Tensor) -> torch.Tensor:
    """[B, 3] a query's confidence profile from its cosine to every intent [B, K]: the best cosine, the margin to
    the second, the entropy of a sharp softmax."""
    top = every.topk(2, dim=-1).values
    p = torch.softmax(every * 20.0, dim=-1)
    return torch.stack([top[:, 0], top[:, 0] - top[:, 1], -(p * p.clamp(min=1e-12).log()).sum(-1)], -1)


@torch.no_grad()
def _zero_query_term(m: nn.Module) -> None:
    """A half-open gate (0.5) on a query term of exactly zero: the model scores exactly like the ranker it is
    nested in, and the gate's gradient, gate x (1 - gate) x term, is not throttled once the term grows (a nearly
    closed start, 0.018, left the term ~50x too small to move valid GAUC in the first epoch)."""
    nn.init.zeros_(m.gate[-1].weight)
    m.gate[-1].bias.zero_()
    m.scale.zero_()
    nn.init.zeros_(m.query[-1].weight)
    nn.init.zeros_(m.query[-1].bias)


class GatedQERecRanker(TwoTowerRanker):
    """QE-Rec that knows how far to trust a query: the two-tower score plus a gated query term.

    score = <user, intent> + bias + gate(request) * (match + interaction), where match is the cosine of the
    query (projected into the intents' text space) with each candidate's text, interaction a bilinear
    query x intent-tower term, and gate in [0, 1] is read from the query's own confidence profile over all
    intents (its best cosine, the margin to the second, the entropy) and the user tower. A query that
    names one intent clearly, for a user whose need the query usually gets right, is trusted; a vague or
    contested one falls back to the two-tower. Nested in a trained two-tower (``start_from_baseline``)."""

    def __init__(self, cfg: RankerConfig, text_emb: torch.Tensor):
        super().__init__(cfg, text_emb)
        d = cfg.dim
        self.query_to_text = nn.Linear(cfg.query_dim, cfg.text_dim, bias=False)
        # the bilinear term reads the query's text vector when it has one: on a reasoner's hidden state it
        # learns the user's features a second time and overfits (BENCHMARKS.md section 1, designs); the hidden
        # state then reaches the score through its projection into the text space only
        self.query = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.query_text or cfg.query_dim, d))
        # the query term's scale is SCALE_GAIN x this parameter: Adam moves a parameter by about lr per step, and
        # a nested model starts the scale at 0, so at gain 1 it reached ~0.2 after an epoch on the tiny world and
        # whether epoch 1 beat the two-tower on valid depended on a CPU's rounding (DESIGN.md s.10)
        self.scale = nn.Parameter(torch.tensor(5.0 / SCALE_GAIN))
        self.gate = nn.Sequential(nn.Linear(d + 3, d), nn.ReLU(), nn.Linear(d, 1))
        _text_identity(self.query_to_text, cfg)

    @property
    def match_scale(self) -> torch.Tensor:
        """The weight of the query's cosine with each candidate's text (before the gate)."""
        return SCALE_GAIN * self.scale

    def start_from_baseline(self) -> None:
        _zero_query_term(self)  # scores exactly like the two-tower it is nested in

    def forward(self, x, behavior, cand, query=None) -> torch.Tensor:
        u = self.user(x, behavior)                                       # [B, d]
        i, b = self.intent(cand)                                         # [B, C, d]
        qt = F.normalize(self.query_to_text(query), dim=-1)              # [B, T]
        every = qt @ self.intent.text_emb.T                              # [B, K] cosine to every intent
        gate = torch.sigmoid(self.gate(torch.cat([u, _confidence(every).detach()], dim=-1)))  # [B, 1]
        match = self.match_scale * every.gather(1, cand)
        interaction = (self.query(_query_input(query, self.cfg)).unsqueeze(1) * i).sum(-1)
        return (u.unsqueeze(1) * i).sum(-1) + b + gate * (match + interaction)


class QERecOnTop(nn.Module):
    """The gated QE-Rec's query term on top of any ranker's score (``base``: a ``ranker.class`` of one's own):

    score = base(x, behavior, cand) + gate(query) * (match + interaction)

    as :class:`GatedQERecRanker` adds it to the two-tower's, except that what it cannot assume of a foreign
    ranker it learns itself: the gate reads the query's confidence profile only (no user tower), and the
    interaction meets a projection of each candidate's text (no intent tower). Nested, ``base`` is a
    trained ranker kept frozen, and :meth:`start_from_baseline` makes it score exactly like it."""

    BASELINE = ("base.",)

    def __init__(self, cfg: RankerConfig, text_emb: torch.Tensor, base: nn.Module):
        super().__init__()
        self.cfg, self.base = cfg, base
        d, t = cfg.dim, cfg.text_dim
        self.query_to_text = nn.Linear(cfg.query_dim, t, bias=False)
        self.query = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.query_text or cfg.query_dim, d))
        self.intent = nn.Linear(t, d)
        self.scale = nn.Parameter(torch.tensor(5.0 / SCALE_GAIN))
        self.gate = nn.Sequential(nn.Linear(3, d), nn.ReLU(), nn.Linear(d, 1))
        _text_identity(self.query_to_text, cfg)

    @property
    def match_scale(self) -> torch.Tensor:
        return SCALE_GAIN * self.scale

    @property
    def text_emb(self) -> torch.Tensor:
        return self.base.text_emb

    def start_from_baseline(self) -> None:
        _zero_query_term(self)  # scores exactly like ``base``

    def forward(self, x, behavior, cand, query=None) -> torch.Tensor:
        base = self.base(x, behavior, cand)
        if query is None:  # no query: the ranker underneath alone
            return base
        qt = F.normalize(self.query_to_text(query), dim=-1)              # [B, T]
        every = qt @ self.text_emb.T                                     # [B, K] cosine to every intent
        gate = torch.sigmoid(self.gate(_confidence(every).detach()))      # [B, 1]
        match = self.match_scale * every.gather(1, cand)
        q = self.query(_query_input(query, self.cfg))
        interaction = (q.unsqueeze(1) * self.intent(self.text_emb[cand])).sum(-1)
        return base + gate * (match + interaction)


ARCHS = {"two_tower": TwoTowerRanker, "qe_rec": QERecRanker, "qe_rec_gated": GatedQERecRanker}


def build_ranker(cfg: RankerConfig, text_emb: torch.Tensor, cls: type | None = None, on_top: bool = False) -> nn.Module:
    """A new ranker: the built-in of ``cfg.arch``, or (``cls``: a ranker class of one's own) ``cls(cfg, text_emb)``,
    or with ``on_top``, :class:`QERecOnTop` over a ``cls`` that reads no query."""
    if cls is not None:
        if on_top:
            return QERecOnTop(cfg, text_emb, cls(replace(cfg, arch="two_tower", query_dim=0, query_text=0), text_emb))
        return cls(cfg, text_emb)
    if cfg.arch not in ARCHS:
        raise ValueError(f"unknown ranker arch {cfg.arch!r}; choose one of {', '.join(ARCHS)}")
    return ARCHS[cfg.arch](cfg, text_emb)
