"""`rgalign recommend` and `rgalign export` on the session's tiny run (nothing trained here): the final stage's
recommendations for the world's test requests reproduce its test metrics, a malformed request is refused with
FILE:LINE and nothing written, and an export loads with transformers and recommends exactly as the run does."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rgalign_rl.align.evaluate import scores_file
from rgalign_rl.recommend import Recommender, RequestError
from rgalign_rl.world import load_world
from rgalign_rl.world.stats import split_user_stats

ROOT = Path(__file__).resolve().parents[1]


def _requests(world, split: str = "test") -> list[dict]:
    """The split's rows as requests: without their clicks."""
    rows = [dict(world.samples[i]) for i in world.indices(split)]
    for r in rows:
        r.pop("clicked")
    return rows


def _stage(metrics: dict, name: str) -> dict:
    return next(s for s in metrics["stages"] if s["name"] == name)


def test_recommend_reproduces_the_final_stage_test_metrics(one_process_run, tiny_world):
    run, metrics = one_process_run
    world = load_world(tiny_world)
    recs = Recommender.from_run(run).recommend(_requests(world), top_k=None)
    test = world.indices("test")
    assert [r["sample_id"] for r in recs] == [str(world.samples.sample_id[i]) for i in test]
    # each request's scores, back on the world's candidate columns, as the loop scored them
    ids, mask = world.candidates
    code = {it["intent_id"]: k for k, it in enumerate(world.intents)}
    scores = np.full(ids[test].shape, -1e4, np.float32)
    for row, (i, r) in enumerate(zip(test, recs)):
        got = {code[x["intent_id"]]: x["score"] for x in r["intents"]}
        assert sorted(got) == sorted(ids[i][mask[i]].tolist())  # every candidate, no other intent
        scores[row, mask[i]] = [got[c] for c in ids[i][mask[i]]]
        s = [x["score"] for x in r["intents"]]
        assert s == sorted(s, reverse=True) and isinstance(r["query"], str) and r["query"]
    # the ranker's batches differ from the loop's (the test rows alone): equal to float32 rounding, same order
    kept = np.load(scores_file(run, "round1/calibrate"))
    np.testing.assert_allclose(scores, kept, rtol=0, atol=1e-5)
    gauc = split_user_stats(world, scores).value()["gauc"]
    assert abs(gauc - _stage(metrics, "final")["gauc"]) <= 1e-6, (gauc, _stage(metrics, "final")["gauc"])


def test_a_bad_request_names_file_and_line_and_writes_nothing(one_process_run, tiny_world, tmp_path):
    run, _ = one_process_run
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"sample_id": "x", "user_id": 1, "timestamp": "soon", "features": {}}\n')
    out = tmp_path / "recs.jsonl"
    cmd = [sys.executable, "-m", "rgalign_rl.cli", "recommend", str(run), "--requests"]
    r = subprocess.run(cmd + [str(bad), "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-1500:]
    assert f"error: {bad}:1: user_id: expected a string" in r.stderr
    assert f"error: {bad}:1: timestamp: expected an integer" in r.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]  # no output, no temporary left behind
    # the same check in-process, every problem of a file at once; and a good request on stdin -> stdout
    rows = _requests(load_world(tiny_world))[:2]
    with pytest.raises(RequestError) as e:
        Recommender.from_run(run).recommend([rows[0], {**rows[1], "candidates": ["nope"]}, rows[0]], name="req")
    assert e.value.problems == ["req:2: candidates: unknown intent id 'nope'",
                                f"req:3: sample_id: duplicate id {rows[0]['sample_id']!r} (first on line 1)"]
    r = subprocess.run(cmd + ["-", "--top-k", "2"], input=json.dumps(rows[0]) + "\n", capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-1500:]
    [rec] = [json.loads(x) for x in r.stdout.splitlines()]
    assert rec["sample_id"] == rows[0]["sample_id"] and len(rec["intents"]) == 2


@pytest.mark.parametrize("stage", ["final", "dpo"])  # dpo: its ranker (QE-Rec) embeds with another snapshot
def test_export_loads_with_transformers_and_recommends_as_the_run(one_process_run, tiny_world, tmp_path, stage):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from rgalign_rl.export import export

    run, metrics = one_process_run
    out = export(run, tmp_path / "export", stage)
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.vocab_size >= len(tok) > 0 and GenerationConfig.from_pretrained(out) is not None
    card = (out / "README.md").read_text()
    m = _stage(metrics, stage)
    assert f"| gauc | {m['gauc']:.4f} [{m['gauc_ci'][0]:.4f}, {m['gauc_ci'][1]:.4f}] |" in card
    assert "## Intended use" in card and "| torch |" in card and str(tiny_world) in card
    assert (out / "ranker" / "model.safetensors").exists() and (out / "intents.jsonl").exists()
    assert (out / "embedder").exists() == (stage == "dpo")
    rows = _requests(load_world(tiny_world))[:40]
    expected = Recommender.from_run(run, stage).recommend(rows)
    assert Recommender.from_export(out).recommend(rows) == expected
    assert Recommender.from_run(out).recommend(rows) == expected  # from_run takes an export too
