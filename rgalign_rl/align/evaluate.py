"""What the closed loop measures about each stage, and how it decides to keep a stage or roll it back.

Stage evaluation follows the serving path: the stage's reasoner writes each valid/test request's query
(greedy), the frozen snapshot the current QE-Rec was trained with embeds it, and the current QE-Rec ranks.
Test scores are kept per stage (scores/<key>.npy) so every comparison is paired over the same users.
A reasoner stage is rolled back to its start when its queries degenerate or its valid reward drops.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

import reward as rewards
from reward.base import is_degenerate

from .. import dist
from ..metrics import EXPECTED, HEADLINE, PAIRED, paired_difference, summarize
from ..ranker.train import RankerData, load_ranker, score
from ..reasoner.model import serving_reasoner
from ..reasoner.queries import embed_queries, reasoner_queries
from ..scoring import FrozenRankerScorer
from ..world.stats import split_user_stats
from .diagnostics import degenerate_share, need_accuracy, need_group_cuts, need_ranks, sampled_kl, versus_by_group


def scores_file(run: str | Path, key: str) -> Path:
    """Where a run keeps a stage's test scores (``key``: the stage's state key, e.g. round1/calibrate)."""
    return Path(run) / "scores" / f"{key.replace('/', '_')}.npy"


def _record(name: str, result: dict) -> dict:
    """A stage's log line: its results, with the headline test metrics instead of the full metrics."""
    rec = {"stage": name, **{k: v for k, v in result.items() if k != "metrics"}}
    if "metrics" in result:
        rec["test"] = {k: result["metrics"][k] for k in HEADLINE}
    return rec


def kept_start(history: list | None) -> bool | None:
    """Whether a ranker's training kept its starting point: its history (entries {"epoch", "valid_gauc"}) starts
    with epoch 0 (a nested or calibrated ranker starts from a trained one) and no later epoch strictly beat
    epoch 0's valid GAUC. None where there was no start to keep (no epoch 0) or no history."""
    if not history or history[0].get("epoch") != 0:
        return None
    start = history[0]["valid_gauc"]
    return not any(h["valid_gauc"] > start for h in history[1:])


def ranker_kept_start(path: str | Path | None, chain: bool = False) -> bool | None:
    """:func:`kept_start` of the ranker saved in ``path`` (its config.json's history); ``chain``: of it and every
    calibration before it (``calibrated_from``, back to the uncalibrated ranker they started from, which does
    not count) together, as for the control, whose rounds each calibrate the previous one."""
    kept, first = None, True
    while path and (Path(path) / "config.json").exists():
        meta = json.loads((Path(path) / "config.json").read_text())
        if not first and "calibrated_from" not in meta:  # the chain's start: not one of its calibrations
            break
        k = kept_start(meta.get("history"))
        if k is None:
            return None
        kept, first = (k if kept is None else kept and k), False
        path = meta.get("calibrated_from") if chain else None
    return kept


_KEPT_REASON = {"qe_rec": "no training epoch beat its two-tower start on valid GAUC",
                "headroom": "no training epoch beat its two-tower start on valid GAUC",
                "control": "no calibration epoch beat QE-Rec, its start, on valid GAUC",
                "calibrate": "no calibration epoch beat the ranker it calibrates on valid GAUC"}


def _stage_kept_start(st: dict) -> tuple[bool | None, str]:
    """(whether a stage kept its starting point, why): a ranker stage whose best epoch is its start (epoch 0),
    a reasoner stage rolled back to its starting reasoner; None where the stage has no start to keep."""
    if "rolled_back" in st:
        why = (f"rolled back to its starting reasoner ({st['fault']})" if st.get("fault") else
               "rolled back to its starting reasoner (degenerate queries or a valid-reward drop)")
        return bool(st["rolled_back"]), why if st["rolled_back"] else ""
    name, key = st["name"], st.get("key") or ""
    if name == "headroom":
        kept = kept_start(st.get("history"))
    elif name in ("qe_rec", "control") or key.endswith("/calibrate"):
        kept = ranker_kept_start(st.get("path"), chain=name == "control")
    else:
        return None, ""
    reason = _KEPT_REASON.get(name, _KEPT_REASON["calibrate"])
    return kept, reason if kept else ""


class Evaluation:
    """The loop's measurements (a mixin of :class:`~rgalign_rl.align.loop.ClosedLoop`: it reads the loop's
    world, config, run folder, valid/test indices and bootstrap weights)."""

    def test_metrics(self, scores: np.ndarray, key: str) -> dict:
        """Metrics with CIs on the test split; the scores are kept (scores/<key>.npy) for paired comparisons."""
        path = self.scores_path(key)
        assert dist.is_main(), "test metrics are computed and kept by the main process"
        path.parent.mkdir(exist_ok=True)
        with open(path.with_suffix(".tmp"), "wb") as f:
            np.save(f, scores[self.test].astype(np.float32))
        path.with_suffix(".tmp").replace(path)
        return summarize(self.test_stats(scores[self.test]), self.boot)

    def scores_path(self, key: str) -> Path:
        return scores_file(self.out, key)

    def test_stats(self, test_scores: np.ndarray):
        return split_user_stats(self.world, test_scores)

    def versus(self, base: str, key: str) -> dict:
        """Paired user-bootstrap differences (stage - base) on the test split, from the kept scores."""
        a, b = (self.test_stats(np.load(self.scores_path(k))) for k in (base, key))
        return paired_difference(a, b, self.boot)

    def headline_versus(self, base: str, key: str) -> dict:
        return {k: v for k, v in self.versus(base, key).items() if k in PAIRED or k == EXPECTED}

    def evaluate_reasoner(self, reasoner: str, ranker_dir: str, key: str, reference: str | None = None) -> dict:
        """Test metrics on the serving path, valid reward, need accuracy, degenerate share, KL."""
        w = self.world
        idx = np.concatenate([self.valid, self.test])
        prompts, queries = reasoner_queries(w, reasoner, idx, max_new_tokens=self.cfg.reasoner.max_new_tokens)
        meta = json.loads((Path(ranker_dir) / "config.json").read_text())
        emb = embed_queries(meta["queries"].split(":", 1)[1], prompts, queries, meta["query_mode"])  # sharded
        return dist.on_main(self._evaluated, reasoner, ranker_dir, key, reference, idx, prompts, queries, emb)

    def _evaluated(self, reasoner, ranker_dir, key, reference, idx, prompts, queries, emb) -> dict:
        w = self.world
        model, enc, _ = load_ranker(ranker_dir)
        full = np.zeros((len(w.samples), emb.shape[1]), np.float32)
        full[idx] = emb
        scores = score(model, RankerData(w, enc, full), np.arange(len(w.samples)))
        nv = len(self.valid)
        reward_fn = self.reward_fn(ranker_dir)
        valid_reward = float(np.mean(reward_fn(prompts[:nv], queries[:nv],
                                               sample_id=[str(w.samples.sample_id[i]) for i in self.valid])))
        out = {"metrics": self.test_metrics(scores, key), "valid_reward": valid_reward,
               "degenerate_share": degenerate_share(queries[nv:]),
               "degenerate_ids": [str(w.samples.sample_id[i]) for i, q in zip(self.test, queries[nv:]) if is_degenerate(q)][:5],
               "need_accuracy": need_accuracy(w, self.test, queries[nv:], self.two_tower_misses()),
               "examples": queries[nv : nv + 5]}
        if reference is not None:
            # in the serving dtype: they only sample and score (two fp32 copies of an 8B reasoner are 60 GB)
            pol, tok = serving_reasoner(reasoner)
            ref, _ = serving_reasoner(reference)
            out["kl_to_ref"] = sampled_kl(pol, ref, tok, prompts[: min(nv, 512)], self.cfg.reasoner.max_new_tokens)
        return out

    def two_tower_misses(self) -> np.ndarray | None:
        """[n_test] bool: requests whose true need the two-tower does not rank first (None before its stage)."""
        kept = self.scores_path("two_tower")
        if not kept.exists() or not self.world.has_needs:
            return None
        return need_ranks(self.world, self.test, np.load(kept)) > 1

    def reward_fn(self, ranker_dir: str):
        """The reward with the ranker in ``ranker_dir`` frozen (or the one ``reward.scorer.ranker`` names); one per
        ranker for the run (the control's evaluation comes between QE-Rec's and RG-SFT's, which share theirs)."""
        ranker_dir = self.cfg.reward.scorer.ranker or ranker_dir
        if ranker_dir not in self._rewards:
            scorer = FrozenRankerScorer(self.world, ranker_dir, self.cfg.reward.scorer)
            self._rewards[ranker_dir] = rewards.build_reward({"name": self.cfg.reward.name, "k": self.cfg.reward.k}, scorer)
        return self._rewards[ranker_dir]

    def _summarised(self, stages: list, control: dict | None) -> dict:
        """The oracle row and the paired differences every report reads."""
        cfg = self.cfg
        probs = self.world.oracle_probs()
        if probs is not None:
            stages.append({"name": "oracle", "metrics": dist.on_main(self.test_metrics, probs, "oracle")})
        keys = {"two_tower": "two_tower", "qe_rec": "qe_rec", "oracle": "oracle"}
        for st in stages:  # every stage against QE-Rec with the warm reasoner, paired over the same users
            key = keys.get(st["name"], st.get("key"))
            # (a run stopped by --until before QE-Rec has nothing to compare with)
            if key and key != "qe_rec" and self.scores_path(key).exists() and self.scores_path("qe_rec").exists():
                st["vs_qe_rec"] = self.headline_versus("qe_rec", key)
            if st["name"] == "final" and control is not None:  # alignment's own share of the final gain
                st["vs_control"] = self.headline_versus("control", st["key"])
            if st["name"] in ("qe_rec", "final", "headroom"):  # what the query adds to the production two-tower
                st["vs_two_tower"] = self.headline_versus("two_tower", keys.get(st["name"], st.get("key")))
            if st["name"] == "qe_rec":  # ... and where: per need group (worlds whose oracle names needs)
                st["vs_two_tower_by_group"] = versus_by_group(self.world, self.test, *(
                    np.load(self.scores_path(k)) for k in ("two_tower", "qe_rec")))
                st["need_group_cuts"] = need_group_cuts(self.world)  # the groups' cuts, relative to this world
            kept, why = _stage_kept_start(st)  # a stage that kept its start: its numbers are the start's
            if kept is not None:
                st["kept_start"] = kept
                if kept:
                    st["kept_start_reason"] = why
        if self.tb is not None:
            self.tb.close()
        return {"stages": stages, "config": asdict(cfg)}

    def checked(self, name, res, ranker_dir, base, prev) -> dict:
        """Evaluates a reasoner stage once and decides whether to keep it or roll back to ``base``."""
        if "fault" in res and "metrics" not in res:  # nothing new to evaluate: the stage serves ``base``
            prev_key = prev.get("key", prev["name"])
            res.update({k: prev[k] for k in ("metrics", "valid_reward", "degenerate_share", "need_accuracy", "examples")
                        if k in prev}, kl_to_ref=0.0, rolled_back=True, use=base)
            if dist.is_main():
                shutil.copyfile(self.scores_path(prev_key), self.scores_path(name))
            self.save_state(name, res)
            self.log(_record(name + "/eval", res))
            dist.barrier()
            return res
        if "metrics" not in res:
            dist.shares()
            res.update(self.evaluate_reasoner(res["path"], ranker_dir, name, reference=base))
            res["eval_shares"] = dist.shares()
            ev = self.cfg.eval
            collapsed = res["degenerate_share"] > ev.max_degenerate
            worse = "valid_reward" in prev and res["valid_reward"] < prev["valid_reward"] - ev.rollback_tolerance
            res["rolled_back"] = bool(collapsed or worse)
            res["use"] = base if res["rolled_back"] else res["path"]
            self.save_state(name, res)
            self.log(_record(name + "/eval", res))
            dist.barrier()
            if res["rolled_back"]:
                self.say(f"[{name}] rolled back (degenerate {res['degenerate_share']:.2f}, e.g. samples "
                         f"{', '.join(res['degenerate_ids']) or '-'}; "
                         f"valid reward {res['valid_reward']:.4f} vs {prev.get('valid_reward', float('nan')):.4f})")
        return res
