"""RG-CL: contrastive alignment of the reasoner's embedding with the ranking space.

InfoNCE between the reasoner's projected last-token embedding of (prompt + its query) and the frozen
ranker's intent embeddings: the clicked intent is the positive; the request's other candidates and the
other requests' clicked intents in the batch are the negatives. The reasoner and the projection train;
the ranker stays frozen.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import dist
from ..reasoner.lora import LoRAFields, merged, with_lora
from ..reasoner.model import last_hidden_states
from ..reasoner.tokens import padded, sequence_ids
from ..world import atomic_dir


@dataclass
class RGCLSettings(LoRAFields):
    temperature: float = 0.1
    learning_rate: float = 5e-5
    epochs: int = 1
    batch_size: int = 64
    max_requests: int = 8000
    seed: int = 0
    threads: int = 2


def rg_cl_loss(z: torch.Tensor, intents: torch.Tensor, cand: torch.Tensor, cand_mask: torch.Tensor,
               pos: torch.Tensor, temperature: float) -> torch.Tensor:
    """z [B, d] projected query states, intents [K, d], cand [B, C] ids, pos [B] clicked intent ids."""
    logits = F.normalize(z, dim=-1) @ F.normalize(intents, dim=-1).T / temperature     # [B, K]
    allowed = torch.zeros_like(logits, dtype=torch.bool)
    allowed.scatter_(1, cand.masked_fill(~cand_mask, 0), cand_mask)                       # own candidates
    allowed[:, pos] = True                                                                # in-batch positives
    return F.cross_entropy(logits.masked_fill(~allowed, -1e4), pos)


class LastTokenProjector(nn.Module):
    def __init__(self, hidden: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(hidden, dim)

    def forward(self, lm, input_ids, attention_mask) -> torch.Tensor:
        from ..reasoner.model import last_token_positions

        h = last_hidden_states(lm, input_ids=input_ids, attention_mask=attention_mask)
        return self.proj(h[torch.arange(len(h)), last_token_positions(attention_mask)])


@torch.no_grad()
def ranker_intent_embeddings(ranker) -> torch.Tensor:
    ids = torch.arange(ranker.cfg.n_intents, device=ranker.intent.text_emb.device)
    return ranker.intent(ids)[0]


def run_rg_cl(reasoner_path, world, ranker, prompts: list[str], queries: list[str], indices: np.ndarray,
              out: str | Path, s: RGCLSettings | None = None, log=lambda stats: None) -> list[dict]:
    """Trains on requests ``indices`` (with >= 1 click) whose prompt/query pairs are given; saves the
    reasoner to ``out`` and returns per-step losses."""
    from ..reasoner.model import load_reasoner

    s = s or RGCLSettings()
    dist.set_threads(s.threads)
    torch.manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    lm, tok = load_reasoner(reasoner_path)
    lm = with_lora(lm, s)
    dev = lm.device
    intents = ranker_intent_embeddings(ranker).to(dev)
    head = LastTokenProjector(lm.config.hidden_size, intents.shape[1]).to(dev)
    keep = [k for k, i in enumerate(indices) if world.samples[i]["clicked"]][: s.max_requests]
    ids, mask = world.candidates
    opt = torch.optim.AdamW([p for p in lm.parameters() if p.requires_grad] + list(head.parameters()), lr=s.learning_rate)
    lm.train()
    history = []
    for _ in range(s.epochs):
        order = rng.permutation(keep)
        for start in range(0, len(order), s.batch_size):
            b = order[start : start + s.batch_size]
            rows = indices[b]
            x, attn = padded(sequence_ids(tok, [prompts[k] for k in b], [queries[k] for k in b]), tok.pad_token_id,
                             "right", dev)
            pos = torch.tensor([world.intent_index[rng.choice(world.samples[i]["clicked"])] for i in rows], device=dev)
            z = head(lm, x, attn)
            loss = rg_cl_loss(z, intents, torch.from_numpy(np.maximum(ids[rows], 0)).to(dev),
                              torch.from_numpy(mask[rows]).to(dev), pos, s.temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append({"step": len(history) + 1, "loss/rg_cl": loss.item()})
            log(history[-1])
    lm = merged(lm).eval()
    with atomic_dir(out) as tmp:
        lm.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return history
