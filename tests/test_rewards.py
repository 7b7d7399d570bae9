import numpy as np
import pytest

from rgalign_rl.faults import NonFiniteError
import yaml

import reward
from rgalign_rl.scoring import FrozenRankerScorer, ScorerConfig
from rgalign_rl.world import load_world

ALL = ["clicked_prob", "reciprocal_rank", "ndcg", "hit", "margin", "target_auc"]


@pytest.fixture(scope="module")
def scorer(tiny_world, tiny_ranker):
    return FrozenRankerScorer(load_world(tiny_world), tiny_ranker, ScorerConfig(neighbours=10))


def test_registry_lists_every_reward_and_loads_module_attr():
    assert set(ALL) <= set(reward.registered())
    assert reward.get_reward_class("reward.hit:HitReward") is reward.get_reward_class("hit")
    with pytest.raises(KeyError, match="unknown reward 'nope'"):
        reward.get_reward_class("nope")


@pytest.mark.parametrize("name", ALL)
def test_clicked_intent_text_beats_a_random_intent_text(scorer, name):
    world = scorer.world
    cfg = yaml.safe_load(f"reward:\n  name: {name}\n  k: 3\n")["reward"]
    r = reward.build_reward(cfg, scorer)
    rng = np.random.default_rng(0)
    rows = [i for i in world.indices("train") if world.samples[i]["clicked"]][:300]
    sids = [world.samples[i]["sample_id"] for i in rows]
    text = {it["intent_id"]: it["text"] for it in world.intents}
    clicked = [text[world.samples[i]["clicked"][0]] for i in rows]
    other = [text[world.intents[rng.integers(len(world.intents))]["intent_id"]] for _ in rows]
    prompts = [""] * len(rows)
    good, bad = r(prompts, clicked, sample_id=sids), r(prompts, other, sample_id=sids)
    assert np.mean(good) > np.mean(bad) + 0.02, (name, np.mean(good), np.mean(bad))
    assert len(good) == len(rows) and all(np.isfinite(good))


def test_target_auc_by_hand():
    import torch

    from reward.target_auc import TargetAUCReward

    r = TargetAUCReward(scorer=None)
    p = torch.tensor([[0.5, 0.3, 0.2, 0.0], [0.25, 0.25, 0.5, 0.0]])  # last column: padding (probability 0)
    t = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.5, 0.0, 0.5, 0.0]])
    # row 0: the target outranks 1 of its 2 others; row 1: a ties b and is below c (0.5 / 2), c tops both (2 / 2)
    assert r.score(p, t).tolist() == pytest.approx([0.5, 0.5 * 0.25 + 0.5 * 1.0])


def test_the_ranker_alone_rewards_the_clicked_intents_text(tiny_world, tiny_ranker):
    """With the text anchor off the reward is the frozen ranker's ranking alone: a known-better query (the
    clicked intent's text) must still beat a known-worse one (a random intent's text) by a margin."""
    scorer = FrozenRankerScorer(load_world(tiny_world), tiny_ranker, ScorerConfig(neighbours=10, anchor_weight=0.0))
    test_clicked_intent_text_beats_a_random_intent_text(scorer, "target_auc")


def test_denoised_targets_are_distributions_and_test_clicks_are_never_read(scorer):
    t = scorer.targets.numpy()
    world = scorer.world
    train = world.indices("train")
    assert np.allclose(t[train].sum(1)[t[train].sum(1) > 0], 1.0)
    assert (t[world.indices("test")] == 0).all()
    # neighbours give a target even to a training request without its own click
    no_click = [i for i in train if not world.samples[i]["clicked"]]
    assert (t[no_click].sum(1) > 0).mean() > 0.9


def test_diagnose_test_targets_are_the_nearest_training_requests_clicks_only(scorer, tiny_ranker):
    """`rgalign diagnose` scores test queries with test_targets=True: a test request's target is its k
    nearest training requests' pooled clicks over its candidates; its own click stays unread."""
    world = scorer.world
    diag = FrozenRankerScorer(world, tiny_ranker, scorer.cfg, test_targets=True)
    rows = world.indices("test")[:30]
    ids, mask = world.candidates
    near = diag.nearest_training(scorer.cfg.neighbours, rows)
    expected = []
    for r, nb in zip(rows, near):
        pooled = np.zeros(len(world.intents))
        for j in nb:
            clicked = world.samples[j]["clicked"]
            for c in clicked:
                pooled[world.intent_index[c]] += 1.0 / len(clicked)
        t = pooled[np.maximum(ids[r], 0)] * mask[r]
        expected.append(t / t.sum() if t.sum() > 0 else t)
    assert np.allclose(diag.target(rows).numpy(), np.array(expected), atol=1e-6)
    assert (scorer.target(rows).numpy() == 0).all()  # the training stages' scorer: none


def test_a_few_requests_targets_are_the_full_tables_rows_and_cost_only_those(scorer, tiny_ranker):
    """Targets are computed per request on first use (an evaluation reads 3k of ~55k requests): the rows
    asked for, and only they, are computed, bit for bit the rows of the full table."""
    world = scorer.world
    fresh = FrozenRankerScorer(world, tiny_ranker, scorer.cfg)
    rows = np.concatenate([world.indices("valid")[:40], world.indices("train")[:40], world.indices("test")[:5]])
    part = fresh.target(rows[::-1])
    assert fresh._have.sum() == len(rows)
    assert np.array_equal(part.numpy(), scorer.targets.numpy()[rows[::-1]])


def test_an_approximate_neighbour_index_gives_nearly_the_exact_targets(scorer, tiny_ranker, monkeypatch):
    """At millions of training requests the neighbours come from a faiss IVF index: on the tiny world (lists of
    32 requests, 8 read) it finds most exact neighbours and the targets stay close to the exact ones."""
    from rgalign_rl import neighbours

    monkeypatch.setattr(neighbours, "LIST", 32)
    world = scorer.world
    ivf = FrozenRankerScorer(world, tiny_ranker, ScorerConfig(neighbours=10, neighbour_index="ivf", neighbour_probe=8))
    rows = world.indices("valid")
    assert ivf._index.kind == "ivf" and scorer._index.kind == "exact"
    assert ivf.neighbour_recall(rows) >= 0.8
    a, b = ivf.target(rows).numpy(), scorer.target(rows).numpy()
    assert np.allclose(a.sum(1)[a.sum(1) > 0], 1.0)
    assert 0.5 * np.abs(a - b).sum(1).mean() < 0.1  # total variation between the two targets


def test_onnx_text_encoders_score_completions_as_torch_does_and_int8_nearly(scorer, tmp_path, monkeypatch):
    """reward.scorer.text_encoder: onnx gives float32 PyTorch's rewards (to 1e-4); onnx_int8 moves them a little
    and its vectors stay close; the disk cache and a bad name are refused."""
    from dataclasses import replace

    import torch

    from rgalign_rl import text_encoder

    pytest.importorskip("onnxruntime")
    if torch.cuda.is_available():
        pytest.skip("on a GPU every text encoder runs PyTorch")
    monkeypatch.setenv("RGALIGN_CACHE", str(tmp_path))
    monkeypatch.setattr(text_encoder, "_ONNX", {})  # export into this test's folder
    world = scorer.world
    rows = [i for i in world.indices("train") if world.samples[i]["clicked"]][:64]
    text = {it["intent_id"]: it["text"] for it in world.intents}
    comps = [f"{text[world.samples[i]['clicked'][0]]} asap {k % 7}" for k, i in enumerate(rows)]  # texts no cache holds
    assert not set(comps) & set(text_encoder._MEMORY)
    sids = [world.samples[i]["sample_id"] for i in rows]
    r = reward.build_reward({"name": "clicked_prob"}, scorer)
    ref, vec = np.asarray(r([""] * len(rows), comps, sample_id=sids)), text_encoder.encode_texts(comps, cache=False)
    got = {}
    for b in ("onnx", "onnx_int8"):
        monkeypatch.setattr(scorer, "cfg", replace(scorer.cfg, text_encoder=b))
        got[b] = np.asarray(r([""] * len(rows), comps, sample_id=sids))
        v = text_encoder.encode_texts(comps, cache=False, backend=b)
        assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5) and (v * vec).sum(1).min() > (0.999 if b == "onnx" else 0.95)
    assert np.abs(got["onnx"] - ref).max() < 1e-4
    alone = np.concatenate([text_encoder.encode_texts([c], cache=False, backend="onnx") for c in comps[:8]])
    assert np.array_equal(alone, text_encoder.encode_texts(comps, cache=False, backend="onnx")[:8])  # in any company
    assert 1e-6 < np.abs(got["onnx_int8"] - ref).mean() < 0.02  # int8 ran, and moved rewards by little
    assert sorted(p.name.endswith("-int8.onnx") for p in (tmp_path / "onnx").iterdir()) == [False, True]  # no temp left
    with pytest.raises(ValueError, match="disk cache holds float32 PyTorch vectors only"):
        text_encoder.encode_texts(comps, cache=True, backend="onnx")
    with pytest.raises(ValueError, match="reward.scorer.text_encoder: 'tensorrt' is not one of torch, onnx, onnx_int8"):
        ScorerConfig(text_encoder="tensorrt")


def test_teacher_text_neighbours_share_the_need_and_skip_test_rows(scorer, tiny_world, tiny_ranker):
    """The user+teachers space finds training requests with the same hidden need more often than the
    ranker's user space alone (rare needs are where it matters), and test requests' teacher rows play no part."""
    world = scorer.world
    need = np.array([world.oracle[s["sample_id"]]["need_intent"] for s in world.samples])
    train = world.indices("train")
    user = FrozenRankerScorer(world, tiny_ranker, ScorerConfig(neighbours=10, neighbour_space="user"))
    same = {name: (need[sc.nearest_training(10)[train]] == need[train, None]).mean()
            for name, sc in (("user", user), ("user+teachers", scorer))}
    assert same["user+teachers"] > same["user"] + 0.1, same
    assert (scorer._teacher_text(world.indices("test")) == 0).all()
    assert (scorer._teacher_text(train).norm(dim=1) > 0.99).float().mean() > 0.5
    garbled = load_world(tiny_world)  # every test request's teacher rows say something else
    t = garbled.teachers
    on_test = garbled.split[t.sample] == "test"
    assert on_test.sum() > 50
    t.query = np.where(on_test, t.query_vocab.code("reset my password"), t.query)
    assert sum(r["query"] == "reset my password" for r in t) >= on_test.sum()
    # test_targets: a test request's target is its neighbours' clicks, found from its own place in the space
    again, base = (FrozenRankerScorer(w, tiny_ranker, ScorerConfig(neighbours=10), test_targets=True) for w in (garbled, world))
    assert np.array_equal(again.targets.numpy(), base.targets.numpy())
    with pytest.raises(ValueError, match="neighbour_space: 'items' is not one of"):
        FrozenRankerScorer(world, tiny_ranker, ScorerConfig(neighbours=10, neighbour_space="items"))


def test_shaping_and_non_finite_rewards(scorer):
    r = reward.build_reward({"name": "clicked_prob"}, scorer)
    sid = scorer.world.samples[int(scorer.world.indices("train")[0])]["sample_id"]
    empty, normal, repeated = r(["", "", ""], ["", "track my parcel", "parcel parcel parcel parcel parcel"],
                                sample_id=[sid] * 3)
    assert empty == -1.0 and repeated < normal
    r.score = lambda p, target: (p * target).sum(-1) * float("nan")
    with pytest.raises(NonFiniteError, match=f"not finite.*{sid}"):
        r([""], ["track my parcel"], sample_id=[sid])
    with pytest.raises(ValueError, match="sample_id"):
        r([""], ["x"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_every_reward_drives_trl_grpo_for_two_steps(scorer, tiny_reasoner, tmp_path, name):
    import datasets
    from trl import GRPOConfig, GRPOTrainer

    from rgalign_rl.reasoner.model import load_reasoner
    from rgalign_rl.reasoner.prompt import build_prompts

    world = scorer.world
    model, tok = load_reasoner(tiny_reasoner)
    idx = world.indices("train")[:8]
    data = datasets.Dataset.from_dict({"prompt": build_prompts(world, idx, tok),
                                       "sample_id": [world.samples[i]["sample_id"] for i in idx]})
    cfg = yaml.safe_load(f"reward:\n  name: {name}\n")["reward"]
    args = GRPOConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=8, learning_rate=1e-4, logging_steps=1, report_to="none", bf16=False,
                      use_cpu=True, gradient_checkpointing=False, save_strategy="no", disable_tqdm=True)
    trainer = GRPOTrainer(model=model, reward_funcs=reward.build_reward(cfg, scorer), args=args,
                          train_dataset=data, processing_class=tok)
    trainer.train()
    logged = [h for h in trainer.state.log_history if f"rewards/{name}/mean" in h]
    assert len(logged) == 2 and all(np.isfinite(h[f"rewards/{name}/mean"]) for h in logged)


def test_queries_the_snapshot_cache_holds_are_read_not_embedded_again_and_score_the_same(one_process_run, tiny_world,
                                                                                        tmp_path, monkeypatch):
    """A QE-Rec on the reasoner's last-token states: the reward embeds each query with that reasoner snapshot. What
    an evaluation has already embedded (EmbeddingCache, on disk) is read, also when written after the scorer was
    built, and gives the same distribution bit for bit; only the rest is embedded."""
    import json

    import torch

    import rgalign_rl.reasoner.model as reasoner_model
    from rgalign_rl.reasoner.model import EmbeddingCache, serving_reasoner
    from rgalign_rl.reasoner.prompt import build_prompts

    monkeypatch.setenv("RGALIGN_CACHE", str(tmp_path / "cache"))  # an empty cache
    ranker_dir = json.loads((one_process_run[0] / "state.json").read_text())["done"]["qe_rec"]["path"]
    world = load_world(tiny_world)
    scorer = FrozenRankerScorer(world, ranker_dir, ScorerConfig(neighbours=10))
    snapshot = scorer.query_source.split(":", 1)[1]
    model, tok = serving_reasoner(snapshot)
    idx = world.indices("valid")[:40]
    prompts = build_prompts(world, idx, tok)
    queries = [world.intents[i % len(world.intents)]["text"] for i in range(len(idx))]
    embedded = []
    real = reasoner_model.last_token_embedding
    monkeypatch.setattr(reasoner_model, "last_token_embedding",
                        lambda m, t, p, q, **kw: embedded.append(len(p)) or real(m, t, p, q, **kw))
    before = scorer.distribution(idx, prompts, queries)
    EmbeddingCache(snapshot).embed(model, tok, prompts[::2], queries[::2])  # as an evaluation writes them
    after = scorer.distribution(idx, prompts, queries)
    assert embedded == [40, 20, 20]  # all; the evaluation's half; the half the cache lacks
    assert torch.equal(before, after)
