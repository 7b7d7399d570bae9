"""RG-SFT: Best-of-N multi-LLM distillation.

For each training request, every candidate query (all teachers' rows for it, plus N samples of the
current reasoner) is scored by the reward in one batched call; the reasoner is then fine-tuned (TRL
SFTTrainer, NEFTune on) on the winners. The winner share of each source is logged: it shows which
teacher the ranker trusts in which segment.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .. import dist
from ..config import Annotated, NonNegative, Positive
from ..faults import kill_point
from ..reasoner.sft import SFTSettings


@dataclass
class BestOfNSettings:
    reasoner_samples: Annotated[int, Positive] = 4  # N samples of the current reasoner per request
    temperature: Annotated[float, Positive] = 1.0
    max_requests: Annotated[int | None, Positive] = None  # training requests used (CPU budget; None: all)
    score_batch: Annotated[int, Positive] = 2048  # completions per reward call
    # copies of each request whose winner names another intent than the one the two-tower ranks first (1: every
    # request once): the only requests where the reasoner's query can change the ranking (BENCHMARKS.md s.2)
    room_weight: Annotated[int, Positive] = 1
    # copies of each request served under the knowledge base as it is now (on or after the newest intent's first
    # appearance among the training logs' candidates): serving-time requests meet that KB, and an earlier request's
    # winner can name an intent a newer one has since taken over (1: every request once)
    current_kb_weight: Annotated[int, Positive] = 1
    sft: SFTSettings = field(default_factory=lambda: SFTSettings(epochs=2, neftune_noise_alpha=5.0))
    seed: Annotated[int, NonNegative] = 0


def collect_candidates(world, indices: np.ndarray, prompts: list[str], reasoner=None, n_samples: int = 0,
                       temperature: float = 1.0, seed: int = 0) -> list[list[tuple[str, str]]]:
    """[(source, query)] per request: every teacher row (train/valid only) plus reasoner samples."""
    from ..reasoner.model import generate_queries

    by_sample: dict[int, list[tuple[str, str]]] = {}
    for i, teacher, query in (world.teachers.rows() if world.teachers else ()):
        by_sample.setdefault(i, []).append((teacher, query))
    out = []
    for i in indices:
        if world.split[i] == "test":
            raise ValueError("Best-of-N never reads test requests' teacher rows")
        out.append(list(by_sample.get(int(i), [])))
    if reasoner is not None and n_samples > 0:
        # each rank samples its share of the requests; each request draws from its own stream, keyed by its
        # position in the request list (not in a rank's share), so the candidates are the same on 1 or N processes
        model, tok = reasoner
        mine = dist.shard(len(indices))
        dist.count("sample", len(indices[mine]))
        gen = generate_queries(model, tok, prompts[mine], do_sample=True, temperature=temperature,
                               num_return_sequences=n_samples, seed=seed, row_keys=np.arange(len(indices))[mine])
        per_request = dist.gather([gen[k * n_samples : (k + 1) * n_samples] for k in range(len(indices[mine]))],
                                  len(indices))
        for k, qs in enumerate(per_request):
            out[k] += [("reasoner", q) for q in qs]
    return out


def score_candidates(reward_fn, world, indices, prompts, candidates, batch: int = 2048) -> list[list[float]]:
    """Rewards aligned with ``candidates``, computed in large batched calls, each rank scoring its share."""
    flat = [(k, q) for k, cands in enumerate(candidates) for _, q in cands]
    mine = flat[dist.shard(len(flat))]
    dist.count("score", len(mine))

    def mine_scored() -> list[float]:
        local: list[float] = []
        for start in range(0, len(mine), batch):
            chunk = mine[start : start + batch]
            local += reward_fn([prompts[k] for k, _ in chunk], [q for _, q in chunk],
                               sample_id=[str(world.samples.sample_id[indices[k]]) for k, _ in chunk])
            kill_point("best_of_n.scoring")
        return local

    # e.g. a non-finite reward on this rank's share: every rank raises it, none waits
    scores = dist.gather(dist.raise_together(mine_scored), len(flat))
    out, pos = [], 0
    for cands in candidates:
        out.append(scores[pos : pos + len(cands)])
        pos += len(cands)
    return out


def select_winners(candidates, rewards) -> tuple[list[int], dict]:
    """Index of the best candidate per request (-1 if none) and the winner share of every source."""
    winners, wins = [], Counter()
    for cands, rs in zip(candidates, rewards):
        if not cands:
            winners.append(-1)
            continue
        best = int(np.argmax(rs))
        winners.append(best)
        wins[cands[best][0]] += 1
    total = max(sum(wins.values()), 1)
    return winners, {src: n / total for src, n in sorted(wins.items())}


def winner_pairs(indices, candidates, winners) -> list[tuple[int, str]]:
    """(sample index, winning query) for every request with a non-empty winner: RG-SFT's training pairs."""
    return [(int(i), c[k][1]) for i, c, k in zip(indices, candidates, winners) if k >= 0 and c[k][1].strip()]


def room_requests(world, ranker_dir, indices, queries: list[str]) -> np.ndarray:
    """[n] whether each query names (nearest intent text) another intent than the one the ranker in ``ranker_dir``
    (the production two-tower) ranks first for its request: where the query can change what the user sees."""
    from ..ranker.train import RankerData, load_ranker, score
    from .diagnostics import named_intents

    ranker, enc, _ = load_ranker(ranker_dir)
    idx = np.asarray(indices)
    top = world.candidates[0][idx, score(ranker, RankerData(world, enc), idx).argmax(1)]
    return named_intents(queries, ranker.text_emb.cpu().numpy()) != top


def current_kb_requests(world, indices) -> np.ndarray:
    """[n] whether each request was served under the knowledge base as it is now: on or after the time the newest
    intent first appears among the training requests' candidates (all true when no intent appears later than the
    first training request). Earlier requests' needs may since have moved to an intent launched after them."""
    train = world.indices("train")
    ids, mask = world.candidates
    ts = world.samples.timestamp
    t_train = ts[train]
    first = np.full(len(world.intents), np.iinfo(np.int64).max)
    rows = np.repeat(np.arange(len(train)), mask[train].sum(1))
    np.minimum.at(first, ids[train][mask[train]], t_train[rows])
    seen = first[first < np.iinfo(np.int64).max]
    since = seen.max() if len(seen) else t_train.min()
    return ts[np.asarray(indices, dtype=np.int64)] >= since


def with_copies(pairs: list[tuple[int, str]], chosen: np.ndarray, weight: int) -> list[tuple[int, str]]:
    """``pairs`` with each pair whose ``chosen`` is true repeated ``weight`` times in place (RG-SFT's data then
    spends that many more steps on those requests)."""
    return [p for p, c in zip(pairs, chosen) for _ in range(weight if c else 1)]
