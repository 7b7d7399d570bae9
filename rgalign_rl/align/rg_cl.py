"""RG-CL: contrastive alignment of the reasoner's embedding with the ranking space the frozen QE-Rec reads.

The reasoner's last-token state of (prompt + its query) is fed to the frozen ranker as the request's
query (in ``both`` mode beside the query's fixed text vector), and the ranker scores every intent for
that request: InfoNCE over those scores, the clicked intent positive, the request's other unclicked
candidates and the batch's other positives negative. The logits are the ranker's own scores, so a
step that lowers the loss moves the ranking; no projection head is trained and thrown away. Only the
reasoner trains. Intents the request also clicked are never negatives (a multi-click request would
otherwise push its own clicks apart).

An anchor keeps the reasoner a writer of queries: ``kl_weight`` x KL(start || reasoner) of the next-token
distributions along the stage's starting queries (its own greedy outputs, which it embeds), the start being
the stage's input reasoner (with LoRA: the same model with its adapters off, no copy). Without it RG-CL moved
the reasoner by sampled KL 10-25 to its start and wrote worse queries (BENCHMARKS.md section 2).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import devices, dist
from ..config import Annotated, NonNegative, Positive
from ..faults import StageFault
from ..ranker.features import FeatureEncoder
from ..ranker.train import RankerData
from ..reasoner.lora import LoRAFields, merged, with_lora
from ..reasoner.model import last_hidden_states, last_token_positions
from ..reasoner.tokens import completion_ids, padded, prompt_ids
from ..text_encoder import encode_texts
from ..world import atomic_dir


class RankerIgnoresQuery(StageFault):
    """The frozen ranker does not read the state RG-CL trains: the stage rolls back to its start."""


@dataclass
class RGCLSettings(LoRAFields):
    temperature: Annotated[float, Positive] = 1.0  # divides the frozen ranker's scores
    learning_rate: Annotated[float, Positive] = 5e-5
    epochs: Annotated[int, NonNegative] = 1        # 0: no RG-CL stage
    batch_size: Annotated[int, Positive] = 64
    max_requests: Annotated[int, Positive] = 8000
    kl_weight: Annotated[float, NonNegative] = 1.0  # anchor: KL to the start along the starting queries (0: none)
    seed: Annotated[int, NonNegative] = 0
    threads: Annotated[int | None, Positive] = None  # None: the run's budget (loop key `threads`)


def rg_cl_loss(logits: torch.Tensor, cand: torch.Tensor, cand_mask: torch.Tensor, pos: torch.Tensor,
               clicked: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """InfoNCE. logits [B, K] scores of every intent for each request, cand [B, C] ids (padding masked
    by ``cand_mask``), pos [B] the positive intent ids, clicked [B, K] every intent each request clicked.
    Negatives: the request's own unclicked candidates and the other rows' positives it did not click."""
    B, K = logits.shape
    allowed = torch.zeros(B, K, dtype=torch.bool, device=logits.device)
    rows = torch.arange(B, device=logits.device).unsqueeze(1).expand_as(cand)
    allowed[rows[cand_mask], cand[cand_mask]] = True                  # own candidates, padding never
    allowed[:, pos] = True                                            # in-batch positives
    allowed &= ~clicked                                               # a request's clicks are not negatives ...
    allowed[torch.arange(B), pos] = True                              # ... except the one it is scored on
    return F.cross_entropy((logits / temperature).masked_fill(~allowed, -1e4), pos)


def query_positions(prompt_lens: list[int], query_lens: list[int], device=None,
                    end: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, positions) of every query token of right-padded prompt + query rows; ``end``: also the position
    after each query, whose next-token distribution (the end of the query) is read from the very state
    RG-CL trains."""
    rows = [r for r, n in enumerate(query_lens) for _ in range(n + end)]
    pos = [p + j for p, n in zip(prompt_lens, query_lens) for j in range(n + end)]
    return torch.tensor(rows, dtype=torch.long, device=device), torch.tensor(pos, dtype=torch.long, device=device)


def query_logprobs(lm, hidden: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """[n, vocab] log-probabilities of the next token before each query token, from the last layer's states
    ``hidden`` [B, T, H]: the LM head runs on those positions only."""
    return F.log_softmax(lm.get_output_embeddings()(hidden[rows, pos - 1]).float(), dim=-1)


def kl_to_start(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Mean over positions of KL(start || current) between next-token distributions [n, vocab]."""
    return (ref_logp.exp() * (ref_logp - logp)).sum(-1).mean() if len(logp) else logp.sum() * 0


@contextmanager
def start_model(lm, ref):
    """The stage's starting reasoner: ``ref`` (a frozen copy), or ``lm`` with its LoRA adapters off."""
    if ref is not None:
        yield ref
    else:
        with lm.disable_adapter():
            yield lm


def run_rg_cl(reasoner_path, world, ranker, query_mode: str, prompts: list[str], queries: list[str],
              indices: np.ndarray, out: str | Path, s: RGCLSettings | None = None, log=lambda stats: None) -> list[dict]:
    """Trains the reasoner on requests ``indices`` (with >= 1 click) whose prompt/query pairs are given,
    against the frozen ``ranker`` that reads its queries in ``query_mode``; saves the reasoner to ``out``
    and returns per-step losses."""
    from ..reasoner.model import load_reasoner, serving_reasoner

    if query_mode not in ("last_token", "both"):
        raise ValueError(f"RG-CL trains the reasoner's last-token state; a ranker reading {query_mode!r} queries "
                         "does not read it (set ranker.query_mode to last_token or both, or rg_cl.epochs: 0)")
    s = s or RGCLSettings()
    dist.set_threads(s.threads)
    torch.manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    lm, tok = load_reasoner(reasoner_path)
    if devices.gradient_checkpointing():  # a big reasoner: keep each layer's input only, recompute the rest
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lm = with_lora(lm, s)
    dev = lm.device
    ranker = ranker.to(dev).eval()
    for p in ranker.parameters():
        p.requires_grad_(False)
    data = RankerData(world, FeatureEncoder.from_json(ranker.encoder_json))
    every = torch.arange(ranker.cfg.n_intents, device=dev)
    text = encode_texts(queries) if query_mode == "both" else None
    keep = [k for k, i in enumerate(indices) if world.samples.clicked.lengths[i]][: s.max_requests]
    # the anchor's start: with LoRA the model itself with its adapters off; otherwise the start's serving copy
    # (frozen, in the serving dtype, shared with whoever else serves that snapshot)
    ref = None if not s.kl_weight or hasattr(lm, "disable_adapter") else serving_reasoner(reasoner_path)[0]
    opt = torch.optim.AdamW([p for p in lm.parameters() if p.requires_grad], lr=s.learning_rate)
    lm.train()
    history = []
    for _ in range(s.epochs):
        order = rng.permutation(keep)
        for start in range(0, len(order), s.batch_size):
            b = order[start : start + s.batch_size]
            rows = indices[b]
            p_ids, c_ids = prompt_ids(tok, [prompts[k] for k in b]), completion_ids(tok, [queries[k] for k in b])
            x, attn = padded([list(p) + list(c) for p, c in zip(p_ids, c_ids)], tok.pad_token_id, "right", dev)
            hidden = last_hidden_states(lm, input_ids=x, attention_mask=attn)          # [B, T, H] (after the norm)
            h = hidden[torch.arange(len(hidden)), last_token_positions(attn)]
            q = h if text is None else torch.cat([h, torch.from_numpy(text[b]).to(dev)], dim=1)
            feats, behavior, cand, _ = data.batch(torch.as_tensor(rows), dev)
            logits = ranker(feats, behavior, every.expand(len(b), -1), q)           # [B, K] through what QE-Rec reads
            clicked = torch.zeros(len(b), len(every), dtype=torch.bool, device=dev)
            picks = []
            for r, i in enumerate(rows):
                ids = [world.intent_index[c] for c in world.samples[i]["clicked"]]
                clicked[r, ids] = True
                picks.append(ids[rng.integers(len(ids))])
            loss = rg_cl_loss(logits, cand, data.mask[rows].to(dev), torch.tensor(picks, device=dev), clicked,
                              s.temperature)
            if not history and not torch.autograd.grad(loss, h, retain_graph=True)[0].any():
                # a QE-Rec that kept its two-tower start (or gives the state no weight) scores every state alike
                raise RankerIgnoresQuery("RG-CL: the frozen ranker's scores do not depend on the reasoner's "
                                         "last-token state (QE-Rec gives it no weight): nothing to align")
            anchor = None
            if s.kl_weight:
                q_rows, q_pos = query_positions([len(p) for p in p_ids], [len(c) for c in c_ids], dev, end=True)
                with torch.no_grad(), start_model(lm, ref) as m:
                    ref_logp = query_logprobs(m, last_hidden_states(m, input_ids=x, attention_mask=attn), q_rows, q_pos)
                anchor = kl_to_start(query_logprobs(lm, hidden, q_rows, q_pos), ref_logp)
            opt.zero_grad()
            (loss if anchor is None else loss + s.kl_weight * anchor).backward()
            opt.step()
            history.append({"step": len(history) + 1, "loss/rg_cl": loss.item(),
                            **({} if anchor is None else {"kl/start": anchor.item()})})
            log(history[-1])
    lm = merged(lm).eval()
    with atomic_dir(out) as tmp:
        lm.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return history
