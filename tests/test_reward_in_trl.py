"""Our reward in your TRL script: ``reward_from_run`` builds the session's tiny run's reward from its folder alone;
it is the reward the loop measured its stages with, it prefers a request's clicked intent's text to another
candidate's, and TRL's own GRPOTrainer and RLOOTrainer train the run's reasoner with it
(examples/grpo_with_our_reward.py)."""
import json
from pathlib import Path

import numpy as np
import pytest

from rgalign_rl.align.loop import sample_subset
from rgalign_rl.reasoner.model import load_tokenizer
from rgalign_rl.reasoner.prompt import build_prompts
from rgalign_rl.recommend import Recommender, reward_from_run, run_serving
from rgalign_rl.world import load_world

EXAMPLES = str(Path(__file__).resolve().parents[1] / "examples")


@pytest.fixture(scope="module")
def reward(one_process_run):
    return reward_from_run(one_process_run[0])


def test_it_is_the_reward_the_run_measured_its_final_stage_with(one_process_run, tiny_world, reward):
    run, metrics = one_process_run
    cfg, world = metrics["config"], load_world(tiny_world)
    valid = sample_subset(world.indices("valid"), cfg["eval"]["max_valid"], cfg["seed"])  # the loop's valid requests
    rows = [{k: v for k, v in world.samples[i].items() if k != "clicked"} for i in valid]
    queries = [r["query"] for r in Recommender.from_run(run).recommend(rows, top_k=1)]  # the final reasoner's
    prompts = build_prompts(world, valid, load_tokenizer(run_serving(run).reasoner))
    got = np.mean(reward(prompts, queries, sample_id=[r["sample_id"] for r in rows]))
    final = next(s for s in metrics["stages"] if s["name"] == "final")
    assert abs(got - final["valid_reward"]) < 1e-6, (got, final["valid_reward"])
    assert reward.__name__ == cfg["reward"]["name"]


def test_the_clicked_intents_text_scores_above_another_candidates(one_process_run, tiny_world, reward):
    world = load_world(tiny_world)
    text = {k: it["text"] for k, it in enumerate(world.intents)}
    ids, mask = world.candidates
    rng = np.random.default_rng(0)
    rows, clicked, other = [], [], []
    for i in world.indices("valid")[:60]:
        clicks = set(world.samples.clicked.row(i).tolist())
        rest = [c for c in ids[i][mask[i]] if c not in clicks]
        if not clicks or not rest:  # a request without a click (or without an unclicked candidate)
            continue
        rows.append(i)
        clicked.append(text[int(sorted(clicks)[0])])
        other.append(text[int(rng.choice(rest))])
    tok = load_tokenizer(run_serving(one_process_run[0]).reasoner)
    prompts = build_prompts(world, rows, tok)
    sid = [str(world.samples.sample_id[i]) for i in rows]
    good, bad = (np.array(reward(prompts, texts, sample_id=sid)) for texts in (clicked, other))
    assert good.mean() > bad.mean() + 0.1 and (good > bad).mean() > 0.7, (good.mean(), bad.mean(), (good > bad).mean())
    # a test request's clicks are never read: no target, the same 0 whatever the query
    test = world.indices("test")[:5]
    assert reward(build_prompts(world, test, tok) * 2, clicked[:5] + other[:5],
                  sample_id=[str(world.samples.sample_id[i]) for i in test] * 2) == [0.0] * 10


@pytest.mark.parametrize("algo", ["grpo", "rloo"])
def test_trl_trains_the_runs_reasoner_with_the_runs_reward(one_process_run, tmp_path, monkeypatch, algo):
    monkeypatch.syspath_prepend(EXAMPLES)
    from grpo_with_our_reward import train  # TRL's own trainers, reward_funcs=reward_from_run(run)

    trainer = train(one_process_run[0], "rg_sft", algo, steps=2, out=str(tmp_path / algo), requests=16)
    [fn] = trainer.reward_funcs
    assert fn.calls == 2 * 2 * 4  # 2 steps x 2 prompts x 4 generations
    logged = [h[f"rewards/{fn.__name__}/mean"] for h in trainer.state.log_history if f"rewards/{fn.__name__}/mean" in h]
    assert len(logged) == 2 and np.isfinite(logged).all(), trainer.state.log_history
    assert json.loads((tmp_path / algo / "config.json").read_text())["model_type"]  # a saved HF folder
