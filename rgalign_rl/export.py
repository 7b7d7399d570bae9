"""`rgalign export`: one stage of a run as a folder that loads without the run.

The folder is the stage's reasoner as a standard Hugging Face causal-LM folder (``AutoModelForCausalLM``,
``AutoTokenizer`` and ``GenerationConfig.from_pretrained(DIR)``) with a model card (README.md), and beside
it what serving needs: ``ranker/`` (the ranker's folder as the run saved it), ``intents.jsonl`` (the intent
table; the ranker's intent ids index it), ``world.json`` (the feature descriptions the prompts read),
``embedder/`` (only when the ranker's query snapshot is not the reasoner itself, as for a reasoner stage) and
``recommender.json`` (the stage and the settings its evaluation used). ``Recommender.from_export(DIR)``
reads it and gives what ``Recommender.from_run(RUN, stage)`` gives. Weights are copied byte for byte, not
re-saved, so the snapshot's fingerprint (the caches' key) and its outputs stay the same.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from .recommend import EXPORT_FILE, RequestError, Serving, run_serving
from .world import atomic_dir, write_jsonl

HEADLINE = ("gauc", "error_rate", "recall@3", "ndcg@3", "mrr", "expected_gauc")


def _copy_model(src: Path, dst: Path) -> None:
    """A model folder's files (weights, config, tokenizer, generation config), not its README or subfolders."""
    dst.mkdir(exist_ok=True)
    for f in sorted(src.iterdir()):
        if f.is_file() and f.name != "README.md":
            shutil.copy2(f, dst / f.name)


def _same_model(a: Path, b: Path) -> bool:
    from .reasoner.model import fingerprint

    return a.resolve() == b.resolve() or fingerprint(a) == fingerprint(b)


def export(run: str | Path, out: str | Path, stage: str = "final") -> Path:
    """Writes stage ``stage`` of ``run`` into ``out`` (replacing it only once all is written)."""
    if (Path(run) / EXPORT_FILE).exists():
        raise RequestError([f"{run}: already an export (copy the folder to move it)"])
    if Path(out).exists() and not (Path(out) / EXPORT_FILE).exists():  # never replace a folder we did not write
        raise RequestError([f"--out {out}: exists and is not an earlier export; choose another folder"])
    s = run_serving(run, stage)
    if s.reasoner is None:
        raise RequestError([f"--stage {s.stage}: its ranker reads no query, so there is no reasoner to export"])
    embedder = "." if _same_model(s.embedder, s.reasoner) else "embedder"
    with atomic_dir(out) as tmp:
        _copy_model(s.reasoner, tmp)
        if embedder != ".":
            _copy_model(s.embedder, tmp / embedder)
        shutil.copytree(s.ranker, tmp / "ranker")
        write_jsonl(tmp / "intents.jsonl", s.intents)
        (tmp / "world.json").write_text(json.dumps(s.meta, indent=1) + "\n")
        (tmp / EXPORT_FILE).write_text(json.dumps(
            {"format": 1, "stage": s.stage, "key": s.key, "reasoner": ".", "embedder": embedder, "ranker": "ranker",
             "query_mode": s.query_mode, "max_new_tokens": s.max_new_tokens, "serve_dtype": s.serve_dtype,
             "run": s.source["run"], "world": s.source["world"], "metrics": s.source["state"].get("metrics")},
            indent=1) + "\n")
        (tmp / "README.md").write_text(model_card(s, embedder != "."))
    return Path(out)


def _cell(m: dict, k: str) -> str:
    ci = m.get(f"{k}_ci")
    return f"{m[k]:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")


def model_card(s: Serving, own_embedder: bool = False) -> str:
    """The README.md of an export: what it is, where it came from, what it scored, how to use it."""
    from .versions import versions

    metrics = s.source["metrics"]
    m = s.source["state"].get("metrics") or {}
    row = next((r for r in metrics.get("stages", []) if r.get("name") == s.stage), {})
    world = s.meta.get("name") or Path(s.source["world"]).name
    lines = ["---", "library_name: transformers", "pipeline_tag: text-generation",
             "tags: [rgalign_rl, recommendation, zero-query-suggestion]", "---", "",
             f"# {world}: the `{s.stage}` reasoner and ranker of an rgalign_rl run", "",
             "A *semantic reasoner* (a causal LM) that reads a support-chatbot user's features and recent actions and "
             "writes a *latent query*: what the user would most likely ask. Beside it, the ranker (`ranker/`) that "
             f"reads the query, with the user's features, to rank the {len(s.intents)} intents of `intents.jsonl`. "
             "Aligned to that ranker by RGAlign-Rec (Ranking-Guided Alignment, arXiv:2602.12968) with rgalign_rl.", "",
             "## Intended use", "",
             "Zero-query intent suggestion: rank the intents to show a user who opens the chatbot, before they type. "
             f"Serve it on requests of the world it was trained on ({world}): the same feature names, values and "
             "intent table. It is not a general-purpose chat model: it writes one short query in its world's words. "
             "Its metrics are offline, on a held-out (later) test split; check them on your traffic before relying "
             "on it.", "", "## Use", "", "```python",
             "from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig",
             "DIR = \"path/to/this/folder\"",
             "model = AutoModelForCausalLM.from_pretrained(DIR)   # the reasoner alone",
             "tokenizer, generation = AutoTokenizer.from_pretrained(DIR), GenerationConfig.from_pretrained(DIR)",
             "", "from rgalign_rl.recommend import Recommender   # features -> query -> ranked intents",
             "request = {\"sample_id\": \"r1\", \"user_id\": \"u1\", \"timestamp\": 0, \"features\": {...}}",
             "recs = Recommender.from_export(DIR).recommend([request], top_k=3)", "```", "",
             f"or `rgalign recommend DIR --requests requests.jsonl --top-k 3` (requests are world sample rows "
             f"without `clicked`; docs/serving.md). Queries are greedy, up to {s.max_new_tokens} new tokens, "
             f"{s.serve_dtype} weights; the ranker reads them as `{s.query_mode}` embeddings"
             + (" of the snapshot in `embedder/` (the one the ranker was trained with)." if own_embedder else "."), "",
             "The reasoner reads prompts written by rgalign_rl's verbaliser (`reasoner.prompt.build_prompts`: "
             "`name=value;` chunks for a tokenizer without a chat template, plain words in its chat template "
             "otherwise) and writes the query after them; the `Recommender` builds them from a request.", "",
             *([f"The ranker is of a class of its own, `{own}`: that module must be importable where it serves.", ""]
               if (own := json.loads((s.ranker / "config.json").read_text()).get("class")) else []),
             "## Where it comes from", "",
             f"- world: {world} (`{s.source['world']}`)" + (f": {desc}" if (desc := s.meta.get("description")) else ""),
             f"- run: `{s.source['run']}`, stage `{s.stage}` (state key `{s.key}`)",
             f"- seeds: {json.dumps(metrics.get('seeds', {}))}", "",
             f"## Test metrics (stage `{s.stage}`, 95% bootstrap CIs over users)", "",
             "| metric | value [95% CI] |", "| --- | --- |"]
    lines += [f"| {k} | {_cell(m, k)} |" for k in HEADLINE if k in m]
    for key, what in (("vs_qe_rec", "QE-Rec with the warm reasoner"), ("vs_two_tower", "the two-tower baseline"),
                      ("vs_control", "the control, the same calibration without alignment")):
        if row.get(key):  # metrics.json's paired differences: the same test users resampled for both
            diffs = ", ".join(f"{k} {v['diff']:+.4f} [{v['ci'][0]:+.4f}, {v['ci'][1]:+.4f}]"
                              for k, v in row[key].items())
            lines += ["", f"Against {what} (paired 95% CI): {diffs}"]
    lines += ["", "## Versions", "", "| package | run | this export |", "| --- | --- | --- |"]
    now, then = versions(), metrics.get("versions", {})
    lines += [f"| {p} | {then.get(p, '-')} | {now.get(p, '-')} |" for p in sorted(set(now) | set(then))]
    lines += ["", "## Config", "", "```json", json.dumps(metrics.get("config", {}), indent=1), "```", ""]
    return "\n".join(lines)
