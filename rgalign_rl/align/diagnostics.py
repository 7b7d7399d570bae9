"""What every reasoner stage reports beside ranking metrics.

- need accuracy: the share of generated queries whose nearest need text (text encoder cosine over all
  the world's need phrases) is the request's true need, overall and per teacher-bias segment — it shows
  alignment directly, beneath the ranking noise (DESIGN.md section 7);
- degenerate share: empty queries or mostly one repeated word;
- KL to a reference model, estimated on sampled completions.
"""
from __future__ import annotations

import numpy as np
import torch

from ..metrics import bootstrap_weights, paired_difference, user_stats
from ..reasoner.prefix import HeadCaches, batch_inputs, plan
from ..reasoner.tokens import positions, prompt_ids
from ..text_encoder import encode_texts
from .ppo import response_mask, token_logprobs

from reward.base import is_degenerate


def nearest_needs(world, queries: list[str]) -> list[str] | None:
    """The need phrase (text encoder cosine over all the world's needs) nearest to each query; None when
    the oracle has no needs."""
    if not world.has_needs:
        return None
    needs = sorted(world.oracle.need_vocab.values)
    uniq, inverse = np.unique(np.asarray(queries, dtype=object).astype(str), return_inverse=True)
    nearest = np.argmax(encode_texts(list(uniq), cache=False) @ encode_texts(needs).T, axis=1)[inverse]
    return [needs[j] for j in nearest]


def named_intents(queries: list[str], intent_vectors: np.ndarray, encode=None) -> np.ndarray:
    """[n] the intent each query names: the nearest intent text (cosine of unit text-encoder vectors)."""
    if not len(queries):
        return np.zeros(0, np.int64)
    if encode is None:
        encode = encode_texts
    uniq, inverse = np.unique(np.asarray(queries, dtype=object).astype(str), return_inverse=True)
    return np.argmax(encode(list(uniq), cache=False) @ intent_vectors.T, axis=1)[inverse.reshape(-1)]


def true_need_named(world, indices, needs: list[str]) -> np.ndarray:
    """[n] whether each need phrase is the true need of the request at the same place in ``indices``."""
    return np.array([n in world.oracle.needs_of(i) for n, i in zip(needs, indices)], bool)


def need_hits(world, indices, queries: list[str]) -> np.ndarray | None:
    """[n] whether each query's nearest need text is its request's true need (None: no needs in the oracle)."""
    nearest = nearest_needs(world, queries)
    return None if nearest is None else true_need_named(world, indices, nearest)


def need_accuracy(world, indices, queries: list[str], room: np.ndarray | None = None) -> dict | None:
    """{"overall", one per teacher-bias segment, and with ``room`` ([n] bool) "two_tower_misses": the accuracy on
    those requests only (:func:`need_ranks` > 1: where a query naming the need can still lift it)}."""
    ok = need_hits(world, indices, queries)
    if ok is None:
        return None
    seg = world.oracle.field_of_samples("segment", "all")[np.asarray(indices)]
    out = {"overall": float(ok.mean())}
    for s in sorted(set(seg)):
        out[str(s)] = float(ok[seg == s].mean())
    if room is not None and room.any():
        out["two_tower_misses"] = float(ok[room].mean())
    return out


def need_positions(world, indices) -> np.ndarray:
    """[n] the position in ``world.intents`` (the candidates' ids) of each request's true-need intent; -1 where the
    oracle names none."""
    pos = {it["intent_id"]: j for j, it in enumerate(world.intents)}
    return np.array([pos.get(x, -1) for x in need_intents(world)[np.asarray(indices)]], np.int64)


def need_ranks(world, indices, scores: np.ndarray) -> np.ndarray:
    """[n] the rank (1 = first; ties count against it) of each request's true-need intent among its candidates
    under ``scores`` [n, C] (e.g. a stage's kept test scores); 0 where the need's intent is not a candidate or the
    oracle names none. Alignment can only move the ranking where the two-tower's rank is above 1: naming a need
    the two-tower already ranks first changes nothing a user sees (BENCHMARKS.md section 2, session 19)."""
    indices = np.asarray(indices)
    need = need_positions(world, indices)
    cand, mask = world.candidates[0][indices], world.candidates[1][indices]
    is_need = (cand == need[:, None]) & mask & (need[:, None] >= 0)
    mine = np.where(is_need, scores, 0.0).sum(1, keepdims=True)
    rank = ((scores >= mine) & mask & ~is_need).sum(1) + 1
    return np.where(is_need.any(1), rank, 0)


NEED_GROUPS = ("cold", "rare", "mid", "frequent")


def need_intents(world) -> np.ndarray:
    """[n] the intent id of every request's true need (the oracle's; "" where it names none)."""
    return world.oracle.field_of_samples("need_intent").astype(str)


def count_cuts(counts) -> tuple[int, int]:
    """The 1/3 and 2/3 quantiles of per-need training-request counts, each an actual count (``lower``: no
    interpolation, so the report can print "<= cut"); (0, 0) without any need."""
    counts = np.asarray(counts)
    if not counts.size:
        return 0, 0
    lo, hi = np.quantile(counts, [1 / 3, 2 / 3], method="lower")
    return int(lo), int(hi)


def count_groups(n, cuts: tuple[int, int]) -> np.ndarray:
    """``rare`` (n <= the first cut), ``mid`` (<= the second) or ``frequent`` for each count; ties fall in the
    lower group."""
    n, (lo, hi) = np.asarray(n), cuts
    return np.where(n <= lo, "rare", np.where(n <= hi, "mid", "frequent"))


def _need_counts(world) -> tuple[np.ndarray, set, dict]:
    """(every request's need intent, the cold intents, {need intent: training requests carrying it})."""
    need = need_intents(world)
    names, counts = np.unique(need[world.indices("train")], return_counts=True)
    return need, set(world.meta.get("cold_intents", [])), dict(zip(names, counts))


def need_group_cuts(world) -> dict | None:
    """How need groups are cut in this world (None where the oracle names no needs): ``rare`` <= ``cuts[0]``,
    ``mid`` <= ``cuts[1]`` < ``frequent`` training requests per need, the cuts being the 1/3 and 2/3 quantiles
    of the training-request counts of the world's non-cold needs (``needs``: how many needs fall in each
    group, ``cold`` included), so every world gets comparable groups whatever its size."""
    if not world.has_needs:
        return None
    _, cold, count = _need_counts(world)
    warm = {k: v for k, v in count.items() if k and k not in cold}
    cuts = count_cuts(np.array(list(warm.values()), dtype=np.int64))
    groups = count_groups(np.array(list(warm.values()), dtype=np.int64), cuts)
    needs = {"cold": len(cold), **{g: int((groups == g).sum()) for g in NEED_GROUPS[1:]}}
    return {"quantiles": [1 / 3, 2 / 3], "cuts": list(cuts), "needs": needs}


def need_groups(world, indices) -> np.ndarray | None:
    """The group of each request's true need (None where the oracle names no needs): ``cold`` (its intent
    launched late: world.json's cold_intents), else by how many training requests carry the need, cut at the
    1/3 and 2/3 quantiles over the world's non-cold needs (:func:`need_group_cuts`): ``rare``, ``mid``,
    ``frequent`` (ties fall low)."""
    cuts = need_group_cuts(world)
    if cuts is None:
        return None
    need, cold, count = _need_counts(world)
    n = np.array([count.get(x, 0) for x in need[indices]])
    return np.where(np.isin(need[indices], list(cold)), "cold", count_groups(n, tuple(cuts["cuts"])))


def versus_by_group(world, indices, base: np.ndarray, scores: np.ndarray) -> dict | None:
    """Paired GAUC difference (scores - base) over the requests ``indices`` of each need group, with a user
    bootstrap CI within the group; None on worlds whose oracle names no needs."""
    groups = need_groups(world, indices)
    if groups is None:
        return None
    out = {}
    for g in NEED_GROUPS:
        sel = groups == g
        if not sel.any():
            continue
        idx = np.asarray(indices)[sel]
        a, b = (user_stats(s[sel], world.labels[idx], world.candidates[1][idx], world.user_codes[idx]) for s in (base, scores))
        diff = paired_difference(a, b, bootstrap_weights(len(np.unique(world.user_codes[idx]))))["gauc"]
        out[g] = {"requests": int(sel.sum()), **diff}
    return out


def degenerate_share(queries: list[str]) -> float:
    return float(np.mean([is_degenerate(q) for q in queries])) if queries else 0.0


@torch.no_grad()
def sampled_kl(model, ref, tok, prompts: list[str], max_new_tokens: int = 16, batch_size: int = 256,
               seed: int = 0) -> float:
    """Monte-Carlo KL(policy || ref) per sequence on completions sampled from the policy. Batched as
    :func:`generate_queries` batches (``prefix.plan``): the prompts' shared head is computed once per model and
    each row pays for its own tail, in the sampling and in both scorings (~4x less for SmolLM2's prompts)."""
    torch.manual_seed(seed)
    ids = prompt_ids(tok, prompts)
    heads = {id(m): HeadCaches(m) for m in (model, ref)}
    total = []
    for b in plan(tok, prompts, ids, batch_size):
        x, mask = batch_inputs(b, ids, tok.pad_token_id, model.device)
        n = len(b.head)

        def head(m):
            return heads[id(m)].for_batch(b.head, len(b.rows)) if n else {}

        seq = model.generate(input_ids=x, attention_mask=mask, do_sample=True, top_k=0, max_new_tokens=max_new_tokens,
                             synced_gpus=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **head(model))
        resp = seq[:, x.shape[1]:]
        rmask = response_mask(resp, tok.eos_token_id)
        attn = torch.cat([mask, rmask.long()], 1)
        # logits of the response positions only (logits_to_keep): [B, T+1, vocab] instead of [B, P+T, vocab],
        # ~30x less at SmolLM2's ~510-token prompts, and what makes a 152k vocabulary fit (memory_plan.py)
        keep = resp.shape[1] + 1
        lp, lr = (token_logprobs(m(input_ids=seq[:, n:], attention_mask=attn, position_ids=positions(attn)[:, n:],
                                   logits_to_keep=keep, **head(m)).logits[:, :-1], resp) for m in (model, ref))
        total.append(((lp - lr) * rmask).sum(1).cpu())
    return float(torch.cat(total).mean()) if total else 0.0
