"""`rgalign diagnose RUN`: why an alignment run did or did not move the ranking.

A run's metrics say *whether* the final ranker beats QE-Rec; these say *where* and *why*, from what the run
kept (metrics.json, state.json, scores/<stage>.npy, round*/candidates.json, the reasoner snapshots):

- groups: test requests split by their true need's frequency (``cold``: its intent launched late, then
  ``rare`` / ``mid`` / ``frequent`` cut at the 1/3 and 2/3 quantiles of the non-cold needs' training-request
  counts, ties low: ``group_cuts`` in the result) where the world's oracle names needs; elsewhere by the
  clicked intent's training clicks (``cold``: none, then cut at the 1/3 and 2/3 quantiles of the rest: ties
  fall in the lower group);
- per stage and group: request AUC (the mean over clicked requests of each request's own AUC: unlike the
  user-weighted GAUC it counts each request once) and need accuracy (nearest need text = true need);
- Best-of-N (RG-SFT data, training requests): how often each candidate source wins, and where needs are
  known how often each source, the reward's winner and any candidate name the true need;
- reward vs ranking: per reasoner stage, on the requests where the stage's query names another intent than
  the warm reasoner's (nearest intent text), how often the reward's verdict (better / worse than the warm
  reasoner's query) matches the change of the request's *expected* AUC (the oracle's click probabilities as
  soft labels: no click-sampling noise). On valid requests with the reward exactly as training uses it
  (target: own clicks + neighbours'), and on test requests (target: the neighbours' clicks alone: test clicks
  are never read); each with the text anchor as configured and without it. The old yardstick (one sampled
  click's AUC, any changed text: ~50% agreement by construction, as most AUC changes reorder candidates the
  request does not want) is kept beside it, labelled;
- drift: the share of test queries each stage changed from the warm reasoner's, beside its sampled KL;
- headroom per group: QE-Rec given the true need's text vs the two-tower (runs with the headroom stage).
"""
from __future__ import annotations

import copy
import dataclasses
import json
from functools import cached_property
from pathlib import Path

import numpy as np

from .align.diagnostics import NEED_GROUPS, named_intents, need_group_cuts, need_groups, need_hits, versus_by_group
from .align.evaluate import scores_file
from .metrics import group_auc, soft_group_auc
from .world import World, load_world

GROUPS = NEED_GROUPS
MARK = "<!-- rgalign diagnose -->"


def intent_groups(world: World, indices) -> np.ndarray:
    """Group of each request by its (first) clicked intent's clicks in the training split: ``cold`` (none),
    then ``rare`` / ``mid`` / ``frequent`` cut at the 1/3 and 2/3 quantiles of the other requests' counts (ties
    fall low); ``unclicked`` without a click."""
    ids, labels = world.candidates[0], world.labels
    idx = np.asarray(indices)
    clicked = labels[idx].any(1)
    n = np.where(clicked, world.train_clicks[ids[idx, labels[idx].argmax(1)]], -1)
    warm = n[n > 0]
    lo, hi = np.quantile(warm, [1 / 3, 2 / 3]) if warm.size else (0, 0)
    return np.where(n < 0, "unclicked", np.where(n == 0, "cold", np.where(n <= lo, "rare", np.where(n <= hi, "mid", "frequent"))))


def request_groups(world: World, indices) -> tuple[np.ndarray, str]:
    """(group of each request, "need" or "intent"): need groups where the oracle names needs."""
    groups = need_groups(world, indices)
    return (groups, "need") if groups is not None else (intent_groups(world, indices), "intent")


def request_auc(scores: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[n] AUC of each request's candidates (ties half); NaN where all its labels are equal."""
    rows = np.nonzero(mask)[0]
    auc, weight = group_auc(rows, scores[mask], labels[mask], n_users=len(scores))
    return np.where(weight > 0, auc, np.nan)


def expected_request_auc(scores: np.ndarray, probs: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[n] AUC of each request's candidates against the oracle's click probabilities as soft labels (ties
    half): the ranking's quality without the noise of which candidate one sampled click fell on. NaN where
    the request's pairs carry no weight (every probability 0, or every one 1)."""
    rows = np.nonzero(mask)[0]
    auc, weight = soft_group_auc(rows, scores[mask], probs[mask], n_users=len(scores))
    return np.where(weight > 0, auc, np.nan)


def intent_changed(queries: list[str], base: list[str], intent_vectors: np.ndarray, encode=None) -> np.ndarray:
    """[n] whether each query names another intent than the base query at the same place. A rewording that
    names the same intent barely moves what the ranker needs to know; counting it (as any changed text
    did) fills the comparison with candidate reorderings no verdict can predict."""
    named = named_intents(list(queries) + list(base), intent_vectors, encode)
    return named[: len(queries)] != named[len(queries):]


def verdicts(d_reward: np.ndarray, d_auc: np.ndarray, changed: np.ndarray, flips: np.ndarray | None = None) -> dict:
    """On the ``changed`` requests whose AUC change is defined: how many (``changed_requests``), how many of
    them moved the AUC at all (``auc_moved``: an exact zero change has no sign to agree with), and on those
    the share where the reward's change has the AUC change's sign (``agreement``; None without any); the same
    share weighted by the size of the AUC change (``weighted_agreement``: most named-intent changes swap one
    wrong intent for another and move the AUC by a hair, a coin flip for any reward); and, with ``flips`` (the
    change named the true need where the warm query did not, or the reverse), the share on those requests
    (``need_flip_requests``, ``need_flip_agreement``): where a reward that tracked the need must agree."""
    ok = changed & ~np.isnan(d_auc)
    moved = ok & (d_auc != 0)
    same = np.sign(d_reward) == np.sign(d_auc)
    w = np.abs(np.nan_to_num(d_auc)) * moved
    out = {"changed_requests": int(ok.sum()), "auc_moved": int(moved.sum()),
           "agreement": float(np.mean(same[moved])) if moved.any() else None,
           "weighted_agreement": float((w * same).sum() / w.sum()) if w.sum() > 0 else None}
    if flips is not None:
        f = moved & flips
        out.update(need_flip_requests=int(f.sum()), need_flip_agreement=float(np.mean(same[f])) if f.any() else None)
    return out


def stage_keys(run: Path, done: dict) -> list[str]:
    """The run's scored stages in the order they finished (state.json), then any others (the oracle)."""
    keys = [k for k in done if scores_file(run, k).exists()]
    named = {scores_file(run, k).stem for k in keys}
    return keys + sorted(p.stem for p in (run / "scores").glob("*.npy") if p.stem not in named)


def snapshot(done: dict, key: str) -> Path | None:
    """The reasoner behind a stage's scores: a ranker stage's ``reasoner`` (QE-Rec, control, calibration),
    else the stage's ``path`` when it is a causal LM (RG-SFT, aligners, RG-CL)."""
    entry = done.get(key, {})
    for field in ("reasoner", "path"):
        if entry.get(field) and (Path(entry[field]) / "tokenizer_config.json").exists():
            return Path(entry[field])
    return None


def _mean(x: np.ndarray) -> float | None:
    x = x[~np.isnan(x)] if x.dtype.kind == "f" else x
    return float(np.mean(x)) if x.size else None


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    ok = ~(np.isnan(a) | np.isnan(b))
    return float(spearmanr(a[ok], b[ok]).statistic) if ok.sum() > 2 and np.ptp(a[ok]) > 0 else None


def _without_anchor(scorer, rows: np.ndarray):
    """The same scorer with anchor_weight 0, sharing its ranker and target cache (a target does not depend on
    the anchor): ``rows``' targets are computed first, so neither copy computes them twice."""
    scorer.target(rows)
    plain = copy.copy(scorer)
    plain.cfg = dataclasses.replace(scorer.cfg, anchor_weight=0.0)
    return plain


class Diagnosis:
    def __init__(self, run: str | Path):
        self.run = Path(run)
        if not (self.run / "metrics.json").exists():
            raise SystemExit(f"error: {self.run}/metrics.json not found: diagnose reads a finished `rgalign run` folder")
        self.metrics = json.loads((self.run / "metrics.json").read_text())
        self.done = json.loads((self.run / "state.json").read_text())["done"]
        self.world = load_world(self.metrics["world"])
        self.test = self.world.indices("test")
        self.groups, self.kind = request_groups(self.world, self.test)
        self.group_cuts = need_group_cuts(self.world) if self.kind == "need" else None  # relative to this world
        self.max_new_tokens = self.metrics["config"]["reasoner"]["max_new_tokens"]
        self.missing: list[str] = []
        self._queries: dict[tuple[Path, str], tuple[list[str], list[str]]] = {}
        self._auc: dict[str, np.ndarray] = {}

    @cached_property
    def valid(self) -> np.ndarray:
        """The valid requests the run checked its reward on: the loop's own draw (eval.max_valid, the seed)."""
        from .align.loop import sample_subset

        cfg = self.metrics["config"]
        return sample_subset(self.world.indices("valid"), cfg.get("eval", {}).get("max_valid"), cfg.get("seed", 0))

    @cached_property
    def intent_vectors(self) -> np.ndarray:
        from .text_encoder import encode_texts

        return encode_texts([it["text"] for it in self.world.intents])

    def queries(self, folder: Path, split: str = "test") -> tuple[list[str], list[str]]:
        """(prompts, greedy queries) of a reasoner snapshot on the test (or the run's valid) requests (the run's
        generation cache when warm)."""
        from .reasoner.queries import reasoner_queries

        if (folder, split) not in self._queries:
            idx = self.test if split == "test" else self.valid
            self._queries[folder, split] = reasoner_queries(self.world, folder, idx, max_new_tokens=self.max_new_tokens)
        return self._queries[folder, split]

    def auc(self, key: str) -> np.ndarray:
        """[n_test] request AUC of a stage's kept test scores."""
        if key not in self._auc:
            w = self.world
            self._auc[key] = request_auc(np.load(scores_file(self.run, key)), w.labels[self.test], w.candidates[1][self.test])
        return self._auc[key]

    def by_group(self, values: np.ndarray) -> dict:
        return {g: _mean(values[self.groups == g]) for g in GROUPS if (self.groups == g).any()}

    def stages(self) -> list[dict]:
        w, rows = self.world, []
        warm = snapshot(self.done, "qe_rec")
        base = self.queries(warm)[1] if warm else None
        for key in stage_keys(self.run, self.done):
            row = {"stage": key, "auc": self.by_group(self.auc(key))}
            folder = snapshot(self.done, key)
            if folder is not None:
                queries = self.queries(folder)[1]
                hits = need_hits(w, self.test, queries)
                row["need_accuracy"] = None if hits is None else self.by_group(hits.astype(float))
                if base is not None:
                    row["queries_changed"] = float(np.mean([a != b for a, b in zip(queries, base)]))
                row["kl_to_ref"] = self.done.get(key, {}).get("kl_to_ref")
                row["valid_reward"] = self.done.get(key, {}).get("valid_reward")
            rows.append(row)
        if not w.has_needs:
            self.missing.append("need accuracy (the world's oracle names no needs)")
        return rows

    def winners(self) -> list[dict]:
        """Round by round: the Best-of-N candidate sources' winner share and (with needs) need accuracy."""
        out = []
        for path in sorted(self.run.glob("round*/candidates.json")):
            c = json.loads(path.read_text())
            idx, cands, rewards = np.array(c["indices"]), c["candidates"], c["rewards"]
            groups = request_groups(self.world, idx)[0]
            sources = sorted({s for cs in cands for s, _ in cs})
            won = np.array([cands[r][int(np.argmax(rewards[r]))][0] for r in range(len(idx))])
            right = need_hits(self.world, np.repeat(idx, [len(cs) for cs in cands]), [t for cs in cands for _, t in cs])
            if right is not None:
                right = np.split(right, np.cumsum([len(cs) for cs in cands])[:-1])
            table = {}
            for g in GROUPS:
                rows = np.nonzero(groups == g)[0]
                if not rows.size:
                    continue
                cell = {"requests": int(rows.size), "winner_share": {s: float(np.mean(won[rows] == s)) for s in sources}}
                if right is not None:
                    cell["need_accuracy"] = {s: _mean(np.array([right[r][k] for r in rows for k, (x, _) in enumerate(cands[r]) if x == s], float))
                                             for s in sources}
                    cell["need_accuracy"]["winner"] = float(np.mean([right[r][int(np.argmax(rewards[r]))] for r in rows]))
                    cell["need_accuracy"]["any"] = float(np.mean([right[r].any() for r in rows]))
                table[g] = cell
            out.append({"round": path.parent.name, "sources": sources, "groups": table})
        if not out:
            self.missing.append("Best-of-N winners (no round*/candidates.json: the run stopped before RG-SFT)")
        return out

    def reward_agreement(self, stages: list[dict]) -> list[dict]:
        """QE-Rec's and round 1's reasoner stages (their scores, like the reward, come from the frozen QE-Rec):
        does the reward's verdict on a stage's query predict how the ranking moved? (module docstring) Per stage:
        {stage, spearman and mean_reward (test, reward as configured, vs the sampled-click AUC), old: the old
        yardstick, expected_auc: {valid|test: {anchor|no_anchor: {mean_reward, spearman, changed_requests,
        auc_moved, agreement}}} (worlds with an oracle; the warm reasoner's row has no verdicts)}."""
        import reward as rewards

        from .scoring import FrozenRankerScorer, ScorerConfig

        if "qe_rec" not in self.done:
            self.missing.append("reward agreement (no qe_rec stage)")
            return []
        cfg = self.metrics["config"]["reward"]
        # one scorer serves both splits: test_targets changes test rows only (their neighbours' clicks instead
        # of none), so a valid request's target is the one training used (own clicks + neighbours')
        scorer = FrozenRankerScorer(self.world, self.done["qe_rec"]["path"], ScorerConfig(**cfg["scorer"]), test_targets=True)
        if scorer.cfg.neighbours == 0:
            self.missing.append("reward agreement (reward.scorer.neighbours = 0: a test request's target is its own click)")
            return []
        probs = self.world.oracle_probs()
        if probs is None:
            self.missing.append("reward agreement against the expected request AUC (the world has no oracle)")
        build = lambda s: rewards.build_reward({"name": cfg["name"], "k": cfg["k"]}, s)  # noqa: E731
        fns = {"anchor": build(scorer)}
        if probs is not None and scorer.cfg.anchor_weight > 0:
            fns["no_anchor"] = build(_without_anchor(scorer, np.concatenate([self.valid, self.test])))
        out, base = [], None
        for row in stages:
            key, folder = row["stage"], snapshot(self.done, row["stage"])
            same_ranker = key == "qe_rec" or (key.startswith("round1/") and "reasoner" not in self.done.get(key, {}))
            if folder is None or not same_ranker:
                continue
            prompts, queries = self.queries(folder)
            r = np.asarray(fns["anchor"](prompts, queries, sample_id=self._ids(self.test)), float)
            auc = self.auc(key)
            item = {"stage": key, "spearman": _spearman(r, auc), "mean_reward": float(r.mean())}
            now = {"queries": queries, "reward": r, "auc": auc}
            if probs is not None:
                now["expected"] = self._expected(key, folder, fns, scorer, probs, r)
            if base is None:  # the warm reasoner (QE-Rec's): what each aligned stage changed
                base = now
            else:  # the old yardstick: one sampled click's AUC, on any changed text
                changed = np.array([a != b for a, b in zip(queries, base["queries"])]) & ~np.isnan(auc) & (auc != base["auc"])
                dr, da = r[changed] - base["reward"][changed], auc[changed] - base["auc"][changed]
                item["old"] = {"changed_requests": int(changed.sum()), "sign_agreement_sampled_click_any_change":
                               float(np.mean(np.sign(dr) == np.sign(da))) if changed.any() else None}
            if probs is not None:
                item["expected_auc"] = self._expected_cells(now["expected"], None if base is now else base["expected"])
            out.append(item)
        return out

    def _ids(self, idx) -> list[str]:
        return [str(self.world.samples.sample_id[i]) for i in idx]

    def _expected(self, key: str, folder: Path, fns: dict, scorer, probs: np.ndarray, test_reward: np.ndarray) -> dict:
        """Per split: the stage's queries, each request's expected AUC and its reward under each variant."""
        mask, out = self.world.candidates[1], {}
        for split, idx in (("valid", self.valid), ("test", self.test)):
            if not len(idx):
                continue
            prompts, queries = self.queries(folder, split)
            scores = np.load(scores_file(self.run, key)) if split == "test" else self.valid_scores(scorer, prompts, queries)
            reward = {v: test_reward if (split, v) == ("test", "anchor") else
                      np.asarray(fn(prompts, queries, sample_id=self._ids(idx)), float) for v, fn in fns.items()}
            reward.setdefault("no_anchor", reward["anchor"])  # anchor_weight 0: one reward
            out[split] = {"queries": queries, "auc": expected_request_auc(scores, probs[idx], mask[idx]), "reward": reward}
        return out

    def _expected_cells(self, now: dict, base: dict | None) -> dict:
        """{split: {variant: mean reward, Spearman with the expected AUC and, against the warm reasoner's
        queries, the verdicts on the requests whose named intent changed}}."""
        out = {}
        for split, m in now.items():
            changed = None if base is None else intent_changed(m["queries"], base[split]["queries"], self.intent_vectors)
            flips = None
            if changed is not None and self.world.has_needs:
                idx = self.valid if split == "valid" else self.test
                flips = need_hits(self.world, idx, m["queries"]) != need_hits(self.world, idx, base[split]["queries"])
            out[split] = {}
            for v, r in m["reward"].items():
                cell = {"mean_reward": float(r.mean()), "spearman": _spearman(r, m["auc"])}
                if changed is not None:
                    cell.update(verdicts(r - base[split]["reward"][v], m["auc"] - base[split]["auc"], changed, flips))
                out[split][v] = cell
        return out

    def valid_scores(self, scorer, prompts: list[str], queries: list[str]) -> np.ndarray:
        """[n_valid, C] the frozen QE-Rec's scores of the valid requests given these queries, on the serving
        path (the snapshot QE-Rec was trained with embeds them): a run keeps test scores only."""
        from .ranker.train import RankerData, score
        from .reasoner.queries import embed_queries

        w, meta = self.world, scorer.meta
        emb = embed_queries(meta["queries"].split(":", 1)[1], prompts, queries, meta["query_mode"])
        full = np.zeros((len(w.samples), emb.shape[1]), np.float32)
        full[self.valid] = emb
        return score(scorer.model, RankerData(w, scorer.encoder, full), self.valid)

    def headroom(self) -> dict | None:
        path = scores_file(self.run, "headroom")
        if not path.exists() or not self.world.has_needs:
            self.missing.append("headroom per group (" + ("the world's oracle names no needs" if not self.world.has_needs
                                                           else "the run had eval.headroom off") + ")")
            return None
        return versus_by_group(self.world, self.test, np.load(scores_file(self.run, "two_tower")), np.load(path))

    def result(self) -> dict:
        stages = self.stages()
        groups = {g: int((self.groups == g).sum()) for g in GROUPS if (self.groups == g).any()}
        return {"run": str(self.run), "world": str(self.world.root), "group_by": self.kind, "groups": groups,
                "group_cuts": self.group_cuts,
                "stages": stages, "winners": self.winners(), "reward_agreement": self.reward_agreement(stages),
                "headroom_by_group": self.headroom(), "not_computed": self.missing}


def diagnose(run: str | Path) -> dict:
    """Everything above for a finished run; writes RUN/diagnose/ (diagnose.json, plots) and report.md's
    Diagnosis section, and returns the dict."""
    from .diagnose_report import write_diagnosis

    d = Diagnosis(run).result()
    write_diagnosis(Path(run), d)
    return d
