"""Serving a finished run: request features -> the stage's reasoner query -> its ranker's order of the intents.

It is the path a stage's test metrics were measured on (align/evaluate.py, ``evaluate_reasoner``), piece by
piece: the stage's reasoner writes each request's query greedily (``generate_queries``: a query does not depend
on its batch); the snapshot the stage's ranker was trained with (its config.json ``queries``) embeds it; the
ranker scores the request's candidates (``score`` over ``RankerData``). For the final stage the two snapshots
are the same reasoner (calibration made it the ranker's); for a reasoner stage (rg_sft, dpo, rg_cl) the
stage's reasoner writes and the ranker's own snapshot embeds, as the loop evaluated it. Applied to the world's
test requests, the scores are the stage's kept scores (scores/<key>.npy) up to float32 rounding (the loop
scored the whole world in one batch, and the ranker's last bit can follow the batch), so its metrics are the
stage's. Queries and embeddings are kept in memory (by prompt; by prompt and query), not in the disk caches.

Requests are world sample rows without ``clicked``, checked by the world format's own validation
(world/schema.py), so a request is refused with the same ``FILE:LINE: field: problem`` as a world row.
"""
from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import devices
from .config import ConfigError
from .world.schema import check_intents, check_meta, check_samples
from .world.world import World

EXPORT_FILE = "recommender.json"  # marks an exported folder (rgalign_rl/export.py)
MAX_KEPT = 50_000  # queries and embeddings kept in memory per recommender; past it the memory starts again


class RequestError(ConfigError):
    """Everything wrong with a recommend or export input, one line per problem (``problems``). A ConfigError
    because that is what the CLI prints as one ``error:`` line per problem, exit status 2."""

    def __init__(self, problems):
        super().__init__([str(p) for p in problems])  # world Problems print as FILE:LINE: field: problem


@dataclass
class Serving:
    """What one stage of a run serves: the folders, and the settings its evaluation used."""

    stage: str                    # the stage's name in metrics.json (final, control, qe_rec, dpo, ...)
    key: str                      # its state.json key (round1/calibrate, ...)
    reasoner: Path | None         # writes the queries (None: the two-tower, which reads none)
    embedder: Path | None         # the frozen snapshot the ranker's queries are embedded by
    ranker: Path
    query_mode: str               # last_token | text | both (the ranker's)
    max_new_tokens: int
    serve_dtype: str              # the run's reasoner.serve_dtype (auto resolves on this machine, as in the run)
    intents: list[dict]
    meta: dict                    # the world's world.json (feature descriptions: the prompts read them)
    source: dict = field(default_factory=dict)  # run, world, config, seeds, versions, metrics (model card)


def _locate(path: str, run: Path) -> Path:
    """A folder state.json names: as recorded, or, for a run moved or named relatively (``--out runs/x``), the
    longest tail of the recorded path that exists under the run folder."""
    p = Path(path)
    if p.exists():
        return p
    for i in range(1, len(p.parts)):
        if (run / Path(*p.parts[i:])).exists():
            return run / Path(*p.parts[i:])
    raise RequestError([f"{path}: missing (named by {run / 'state.json'})"])


def stage_key(done: dict, stage: str, rounds: int) -> tuple[str, str]:
    """(state key, metrics.json name) of a stage given as metrics.json names it (final, control, dpo,
    rg_sft_r2, calibrated_r1) or as its state key (round1/calibrate)."""
    key = stage
    if stage == "final":
        key = f"round{rounds}/calibrate"
    elif stage not in done:
        m = re.fullmatch(r"(.+)_r(\d+)", stage)
        name, r = (m.group(1), m.group(2)) if m else (stage, "1")
        key = f"round{r}/{'calibrate' if name == 'calibrated' else name}"
    if key not in done or key in ("headroom", "reasoner_warm"):  # headroom reads the oracle's need: no serving
        names = [stage_name(k, rounds) for k in done if k not in ("headroom", "reasoner_warm")]
        raise RequestError([f"--stage {stage}: not a finished, servable stage of this run; one of {', '.join(names)}"])
    return key, stage_name(key, rounds)


def stage_name(key: str, rounds: int) -> str:
    """metrics.json's name of a state key (as align/loop.py names its stages)."""
    m = re.fullmatch(r"round(\d+)/(.+)", key)
    if not m:
        return key
    r, what = int(m.group(1)), m.group(2)
    if what == "calibrate":
        return "final" if r == rounds else f"calibrated_r{r}"
    return what if rounds == 1 else f"{what}_r{r}"


def run_serving(run: str | Path, stage: str = "final") -> Serving:
    """The stage of a finished (or stopped) run, from its state.json (and metrics.json's config)."""
    run = Path(run)
    if not (run / "state.json").exists():
        raise RequestError([f"{run}: not a run folder (no state.json) nor an exported recommender (no {EXPORT_FILE})"])
    done = json.loads((run / "state.json").read_text())["done"]
    metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else {}
    cfg = metrics.get("config", {})
    rounds = cfg.get("rounds") or max([int(k[5:].split("/")[0]) for k in done if k.startswith("round")] or [1])
    key, name = stage_key(done, stage, rounds)
    entry = done[key]
    if "reasoner" in entry or key == "two_tower":  # a ranker stage: its ranker and the reasoner it was read with
        ranker, reasoner = entry["path"], entry.get("reasoner")
    else:  # a reasoner stage was evaluated with the ranker of its round: QE-Rec's, or the last calibration's
        r = int(key[5:].split("/")[0])
        ranker = done["qe_rec" if r == 1 else f"round{r - 1}/calibrate"]["path"]
        reasoner = entry["path"]  # the reasoner its metrics measured (a rolled-back stage's metrics say so)
    ranker = _locate(ranker, run)
    rmeta = json.loads((ranker / "config.json").read_text())
    spec = rmeta.get("queries", "none")
    if spec != "none" and not spec.startswith("reasoner:"):
        raise RequestError([f"{ranker}: its queries are {spec}, which no serving path has"])
    world = Path(metrics.get("world") or run / "world")
    world = world if world.exists() else run / "world"  # a world named relatively, or generated into the run
    intents, problems = check_intents(world / "intents.jsonl")
    meta, p = check_meta(world / "world.json") if (world / "world.json").exists() else ({}, [])
    if problems + p:
        raise RequestError(problems + p)
    return Serving(name, key, None if reasoner is None or spec == "none" else _locate(reasoner, run),
                   None if spec == "none" else _locate(spec.split(":", 1)[1], run), ranker,
                   rmeta.get("query_mode", "last_token"),
                   cfg.get("reasoner", {}).get("max_new_tokens") or rmeta.get("max_new_tokens", 16),
                   cfg.get("reasoner", {}).get("serve_dtype", "float32"), intents, meta,
                   {"run": str(run), "world": str(world), "state": entry, "metrics": metrics})


def reward_from_run(run: str | Path, stage: str = "final"):
    """The run's reward, with the stage's ranker frozen, as the loop built it (``Evaluation.reward_fn``): the
    config's ``reward.name``, ``reward.k`` and ``reward.scorer`` over the run's world. A TRL ``reward_funcs``
    callable, ``reward(prompts, completions, sample_id=[...]) -> list[float]``, for requests of that world
    (``sample_id``: the dataset's column); its targets are a request's clicks and its nearest training
    requests', so a test request, whose clicks no stage reads, scores 0 (shaping aside). A ranker that reads the
    reasoner's last-token state embeds with the snapshot it was trained with, in this process's serve dtype
    (``devices.serve_dtype()``: float32 unless configured), as the loop did in the run's."""
    import reward as rewards

    from .align.loop_config import RewardSettings
    from .config import from_dict
    from .scoring import FrozenRankerScorer
    from .world import load_world

    s = run_serving(run, stage)
    if not s.source["metrics"]:
        raise RequestError([f"{run}: no metrics.json, so the run's reward config is unknown (a finished run has one)"])
    cfg = from_dict(RewardSettings, s.source["metrics"].get("config", {}).get("reward"), "reward")
    scorer = FrozenRankerScorer(load_world(s.source["world"]), s.ranker, cfg.scorer)
    if cfg.scorer.ranker is None and s.embedder is not None:  # the snapshot where run_serving found it (moved runs)
        scorer.query_source = f"reasoner:{s.embedder}"
    return rewards.build_reward({"name": cfg.name, "k": cfg.k}, scorer)


def export_serving(root: str | Path) -> Serving:
    """The stage an exported folder holds (rgalign_rl/export.py writes it)."""
    root = Path(root)
    info = json.loads((root / EXPORT_FILE).read_text())
    intents, problems = check_intents(root / "intents.jsonl")
    meta, p = check_meta(root / "world.json") if (root / "world.json").exists() else ({}, [])
    if problems + p:
        raise RequestError(problems + p)
    sub = lambda k: None if info[k] is None else root / info[k]  # noqa: E731
    return Serving(info["stage"], info["key"], sub("reasoner"), sub("embedder"), root / info["ranker"],
                   info["query_mode"], info["max_new_tokens"], info["serve_dtype"], intents, meta, info)


def read_requests(source, intents: list[dict], meta: dict | None = None, name: str | None = None) -> World | None:
    """Requests (a JSONL path, ``-`` for stdin, or a list of row dicts) as a World of their own (None: no
    request), validated as world sample rows are; ``clicked`` may be left out (``split`` is dropped).
    RequestError lists every problem as ``NAME:LINE: field: problem`` (NAME: the path as given)."""
    if isinstance(source, (str, Path)):
        name = name or ("<stdin>" if str(source) == "-" else str(source))
        data = sys.stdin.buffer.read() if str(source) == "-" else Path(source).read_bytes()
        lines = data.split(b"\n")  # as the world reader splits them, so line numbers match
    else:
        name = name or "<rows>"
        lines = [json.dumps(r, default=lambda o: o.item() if hasattr(o, "item") else str(o)).encode() for r in source]
    if not any(x.strip() for x in lines):
        return None
    with tempfile.TemporaryDirectory(prefix="rgalign-requests-") as tmp:
        path = Path(tmp) / "samples.jsonl"
        path.write_bytes(b"\n".join(_as_sample(x) for x in lines))
        table, problems = check_samples(path, [i["intent_id"] for i in intents])
    if problems:
        for p in problems:
            p.file = name
        raise RequestError(problems)
    return World(Path(name), meta or {}, intents, table)


def _as_sample(line: bytes) -> bytes:
    """A request line as a world sample line: ``clicked`` empty when absent, ``split`` dropped. A line that is
    not a JSON object stays as it is, for the checker to name."""
    try:
        row = json.loads(line.decode("utf-8"))
    except ValueError:
        return line
    if not isinstance(row, dict):
        return line
    row.pop("split", None)
    row.setdefault("clicked", [])
    return json.dumps(row).encode()


class Recommender:
    """``Recommender.from_run(RUN, stage="final").recommend(rows, top_k=3)``: for each request
    ``{"sample_id", "query", "intents": [{"intent_id", "text", "score"}, ...]}``, best first."""

    def __init__(self, serving: Serving):
        from .ranker.train import load_ranker

        self.serving = serving
        self.ranker, self.encoder, _ = load_ranker(serving.ranker)
        self._models: dict[Path, tuple] = {}
        self._queries: dict[str, str] = {}  # prompt -> greedy query: a prompt is generated once
        self._vectors: dict[tuple[str, str], np.ndarray] = {}  # (prompt, query) -> query embedding

    @classmethod
    def from_run(cls, run: str | Path, stage: str = "final") -> "Recommender":
        """A run folder's stage, or an exported folder (``stage`` then must be the one it holds)."""
        if (Path(run) / EXPORT_FILE).exists():
            rec = cls.from_export(run)
            if stage not in ("final", rec.serving.stage, rec.serving.key):
                raise RequestError([f"{run}: an export of stage {rec.serving.stage}, not {stage}"])
            return rec
        return cls(run_serving(run, stage))

    @classmethod
    def from_export(cls, root: str | Path) -> "Recommender":
        return cls(export_serving(root))

    def _model(self, path: Path):
        """A snapshot loaded once, as the loop loads one to serve: ``load_reasoner`` in the run's serve dtype
        (``auto`` resolved on this machine, as the run resolved it on its own)."""
        import torch

        from .reasoner.model import load_reasoner

        if path.resolve() not in self._models:
            dtype = getattr(torch, devices.resolve_serve_dtype(self.serving.serve_dtype))
            self._models[path.resolve()] = load_reasoner(path, dtype=dtype)
        return self._models[path.resolve()]

    def _generate(self, world: World, prompts: list[str]) -> list[str]:
        from .reasoner.model import generate_queries
        from .reasoner.tokens import check_fits, prompt_ids

        todo = sorted({p for p in prompts if p not in self._queries})
        if todo:
            model, tok = self._model(self.serving.reasoner)
            n = self.serving.max_new_tokens
            owner = {p: str(world.samples.sample_id[i]) for i, p in enumerate(prompts)}
            try:
                check_fits(model, [len(x) + n for x in prompt_ids(tok, todo)], [owner[p] for p in todo],
                           f"the prompt (+ {n} new tokens)")
            except ValueError as e:
                raise RequestError([str(e)]) from None
            if len(self._queries) + len(todo) > MAX_KEPT:
                self._queries.clear()
            self._queries.update(zip(todo, generate_queries(model, tok, todo, max_new_tokens=n)))
        return [self._queries[p] for p in prompts]

    def _embed(self, prompts: list[str], queries: list[str]) -> np.ndarray:
        """[n, D] query embeddings as ``embed_queries`` computes them for the ranker's ``query_mode`` (the
        snapshot's last-token state, the text encoder's vector, or both: the same functions, whose rows do not
        depend on their batch), kept in memory by (prompt, query) rather than in the disk caches, which a
        server would re-read whole and add a shard to on every call."""
        from .reasoner.model import last_token_embedding
        from .reasoner.queries import MODES
        from .text_encoder import encode_texts

        mode = self.serving.query_mode
        if mode not in MODES:
            raise RequestError([f"{self.serving.ranker}: query_mode {mode!r} is not one of {', '.join(MODES)}"])
        keys = list(zip(prompts, queries))
        todo = sorted(set(keys) - self._vectors.keys())
        if todo:
            parts = []
            if mode in ("last_token", "both"):
                model, tok = self._model(self.serving.embedder)
                parts.append(last_token_embedding(model, tok, [p for p, _ in todo], [q for _, q in todo]))
            if mode in ("text", "both"):
                parts.append(encode_texts([q for _, q in todo], cache=False))
            if len(self._vectors) + len(todo) > MAX_KEPT:
                self._vectors.clear()
            self._vectors.update(zip(todo, np.concatenate(parts, axis=1)))
        return np.stack([self._vectors[k] for k in keys]).astype(np.float32)

    def scores(self, world: World) -> tuple[list[str | None], np.ndarray]:
        """(each request's query, [n, C] scores over ``world.candidates``, padding at ``NEG``)."""
        from .ranker.train import RankerData, score
        from .reasoner.prompt import build_prompts

        s, idx = self.serving, np.arange(len(world.samples))
        queries, emb = [None] * len(idx), None
        if s.embedder is not None:
            prompts = build_prompts(world, idx, self._model(s.reasoner)[1])
            queries = self._generate(world, prompts)
            emb = self._embed(prompts, queries)
        return queries, score(self.ranker, RankerData(world, self.encoder, emb), idx)

    def recommend(self, rows, top_k: int | None = 3, name: str | None = None) -> list[dict]:
        """Ranked intents for each request: ``rows`` a list of request dicts, a JSONL path (``-``: stdin) or
        a World from :func:`read_requests`; ``top_k`` None for every candidate. Raises RequestError, naming
        every problem, before anything is computed."""
        world = rows if isinstance(rows, World) else read_requests(rows, self.serving.intents, self.serving.meta, name)
        if world is None:
            return []
        queries, scores = self.scores(world)
        ids, mask = world.candidates
        out = []
        for i in range(len(ids)):
            cand, s = ids[i][mask[i]], scores[i][mask[i]]
            order = np.argsort(-s, kind="stable")[:top_k]
            out.append({"sample_id": str(world.samples.sample_id[i]), "query": queries[i],
                        "intents": [{"intent_id": self.serving.intents[cand[j]]["intent_id"],
                                     "text": self.serving.intents[cand[j]]["text"], "score": float(s[j])}
                                    for j in order]})
        return out


def write_jsonl_atomic(rows: list[dict], out: str | Path) -> Path:
    """JSON lines into ``out`` through a temporary sibling: a reader never sees part of a file."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return out
