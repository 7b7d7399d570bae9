import json

import numpy as np
import pytest
import torch

from rgalign_rl.align.online import OnlineSettings, run_online
from rgalign_rl.align.rg_cl import RGCLSettings, rg_cl_loss, run_rg_cl
from rgalign_rl.reasoner.model import load_reasoner
from rgalign_rl.reasoner.prompt import build_prompts
from rgalign_rl.world import load_world

from conftest import CONFIG, PREFIX, THREADS, copy_run


def test_rg_cl_step_raises_the_frozen_rankers_score_of_the_clicked_intent(tiny_world, tiny_reasoner, tmp_path):
    """RG-CL's logits are the frozen QE-Rec's scores: training lowers its loss and moves what the ranker reads."""
    from rgalign_rl.ranker.train import RankerData, TrainConfig, score, train_ranker
    from rgalign_rl.reasoner.queries import embed_queries, reasoner_queries

    torch.set_num_threads(THREADS)
    world = load_world(tiny_world)
    idx = np.array([i for i in world.indices("train") if world.samples[i]["clicked"]])[:64]
    prompts, queries = reasoner_queries(world, tiny_reasoner, idx, max_new_tokens=8)
    full = np.zeros((len(world.samples), 64), np.float32)
    full[idx] = embed_queries(tiny_reasoner, prompts, queries)
    ranker, enc, _ = train_ranker(world, "qe_rec", full, TrainConfig(epochs=2), log=lambda *a: None,
                                  train_indices=idx)
    before = {n: p.clone() for n, p in ranker.state_dict().items()}

    def clicked_score(path):
        q = np.zeros_like(full)
        q[idx] = embed_queries(path, prompts, queries)
        s = score(ranker, RankerData(world, enc, q), idx)
        return float((s * world.labels[idx]).sum() / world.labels[idx].sum() - s[world.candidates[1][idx]].mean())

    hist = run_rg_cl(tiny_reasoner, world, ranker, "last_token", prompts, queries, idx, tmp_path / "cl",
                     RGCLSettings(epochs=4, batch_size=16, learning_rate=1e-3))
    assert np.mean([h["loss/rg_cl"] for h in hist[-4:]]) < np.mean([h["loss/rg_cl"] for h in hist[:4]])
    assert clicked_score(tmp_path / "cl") > clicked_score(tiny_reasoner)    # the ranking moved
    assert all(torch.equal(before[n], p) for n, p in ranker.state_dict().items())  # the ranker stayed frozen


def test_rg_cl_anchor_is_the_nll_of_the_starting_queries(tiny_world, tiny_reasoner):
    """RG-CL reads the next-token distributions along the starting queries from the states it already has:
    their NLL equals the model's own loss on the query tokens (prompt tokens masked), and the anchor, the KL
    to the start, is 0 at the start."""
    from rgalign_rl.align.rg_cl import kl_to_start, query_logprobs, query_positions
    from rgalign_rl.reasoner.model import last_hidden_states, load_reasoner
    from rgalign_rl.reasoner.prompt import build_prompts
    from rgalign_rl.reasoner.tokens import completion_ids, padded, prompt_ids

    world = load_world(tiny_world)
    lm, tok = load_reasoner(tiny_reasoner)
    prompts = build_prompts(world, world.indices("train")[:4], tok)
    p, c = prompt_ids(tok, prompts), completion_ids(tok, ["track my parcel", "cancel", "refund my order now", "hi"])
    x, attn = padded([list(a) + list(b) for a, b in zip(p, c)], tok.pad_token_id, "right")
    labels = torch.full_like(x, -100)
    for r, (a, b) in enumerate(zip(p, c)):
        labels[r, len(a) : len(a) + len(b)] = x[r, len(a) : len(a) + len(b)]
    with torch.no_grad():
        want = lm(input_ids=x, attention_mask=attn, labels=labels).loss
        hidden = last_hidden_states(lm, input_ids=x, attention_mask=attn)
        rows, pos = query_positions([len(a) for a in p], [len(b) for b in c])
        logp = query_logprobs(lm, hidden, rows, pos)
    assert torch.nn.functional.nll_loss(logp, x[rows, pos]).item() == pytest.approx(want.item(), rel=1e-5)
    assert kl_to_start(logp, logp).item() == pytest.approx(0.0, abs=1e-6)
    assert kl_to_start(logp, torch.log_softmax(torch.zeros_like(logp), -1)).item() > 0.1


def test_rg_cl_refuses_a_ranker_that_does_not_read_the_state(tiny_world, tiny_reasoner, tmp_path):
    """A nested QE-Rec that kept its two-tower start scores every state alike: RG-CL says so (a stage fault,
    which the loop rolls back) instead of training on a zero gradient."""
    from rgalign_rl.align.rg_cl import RankerIgnoresQuery
    from rgalign_rl.ranker.train import TrainConfig, train_ranker
    from rgalign_rl.reasoner.queries import reasoner_queries

    world = load_world(tiny_world)
    idx = np.array([i for i in world.indices("train") if world.samples[i]["clicked"]])[:16]
    prompts, queries = reasoner_queries(world, tiny_reasoner, idx, max_new_tokens=8)
    tt, enc, _ = train_ranker(world, "two_tower", None, TrainConfig(epochs=1), log=lambda *a: None)
    start, _, _ = train_ranker(world, "qe_rec_gated", np.zeros((len(world.samples), 64), np.float32),
                               TrainConfig(epochs=0), encoder=enc, nest=tt, log=lambda *a: None)
    with pytest.raises(RankerIgnoresQuery, match="nothing to align"):
        run_rg_cl(tiny_reasoner, world, start, "last_token", prompts, queries, idx, tmp_path / "cl")
    assert not (tmp_path / "cl").exists()


def test_rg_cl_negatives_are_own_candidates_and_batch_positives_never_own_clicks():
    F = torch.nn.functional
    logits = torch.tensor([[0.5, 1, 2, 4, 3], [2.0, 5, 0, 1, 3]])   # scores of intents 0-4
    cand = torch.tensor([[2, 3, 0, 0], [0, 1, 4, 0]])               # the masked 0s are padding
    mask = torch.tensor([[True, True, False, False], [True, True, True, False]])
    clicked = torch.zeros(2, 5, dtype=torch.bool)
    clicked[0, [3, 2]] = True                                         # request 0 clicked 3 and 2
    clicked[1, 1] = True
    loss = rg_cl_loss(logits, cand, mask, torch.tensor([3, 1]), clicked)
    # request 0 (positive 3): candidate 2 is its own click, not a negative; batch positive 1 is; padding
    # never makes intent 0 one. Request 1 (positive 1): its real candidate 0 stays a negative beside its
    # padding, and batch positive 3.
    expect = (F.cross_entropy(torch.tensor([[1.0, 4]]), torch.tensor([1]))
              + F.cross_entropy(torch.tensor([[2.0, 5, 1, 3]]), torch.tensor([1]))) / 2
    assert torch.isclose(loss, expect, atol=1e-5)
    halved = rg_cl_loss(logits / 2, cand, mask, torch.tensor([3, 1]), clicked)
    assert torch.isclose(rg_cl_loss(logits, cand, mask, torch.tensor([3, 1]), clicked, temperature=2.0), halved)


def _toy_dataset(tiny_world, tiny_reasoner, n=16):
    import datasets

    world = load_world(tiny_world)
    _, tok = load_reasoner(tiny_reasoner)
    idx = world.indices("train")[:n]
    return datasets.Dataset.from_dict({"prompt": build_prompts(world, idx, tok),
                                       "sample_id": [world.samples[i]["sample_id"] for i in idx]})


def short_reward(prompts, completions, **kw):
    """Toy reward: short queries are good."""
    return [-len(c.split()) / 8 for c in completions]


def _online_raises_reward(tiny_world, tiny_reasoner, tmp_path, algorithm):
    hist = run_online(tiny_reasoner, short_reward, _toy_dataset(tiny_world, tiny_reasoner), tmp_path / "out",
                      OnlineSettings(algorithm=algorithm, max_steps=16, learning_rate=2e-3, prompts_per_step=4,
                                     num_generations=4, max_completion_length=12), log_dir=tmp_path / "log")
    r = [h["reward"] for h in hist if "reward" in h]
    assert len(r) == 16
    assert np.mean(r[-4:]) > np.mean(r[:4]) + 0.1, r


def test_grpo_raises_a_toy_reward(tiny_world, tiny_reasoner, tmp_path):
    _online_raises_reward(tiny_world, tiny_reasoner, tmp_path, "grpo")


def test_rloo_raises_a_toy_reward(tiny_world, tiny_reasoner, tmp_path):
    _online_raises_reward(tiny_world, tiny_reasoner, tmp_path, "rloo")


def test_reward_budget_cuts_requests_and_rewards_count_their_calls():
    import reward as rewards
    from rgalign_rl.align.aligners import _within_budget

    assert _within_budget([3, 3, 3], 7) == 2 and _within_budget([3, 3, 3], 9) == 3
    assert _within_budget([3, 3, 3], None) == 3 and _within_budget([5], 4) == 0

    class Plain:  # a user's reward without a counter gets one
        def __init__(self, scorer):
            pass

        def __call__(self, prompts, completions, **columns):
            return [0.0] * len(completions)

    import sys
    import types

    sys.modules["my_plain_reward"] = types.SimpleNamespace(Plain=Plain)
    fn = rewards.build_reward({"name": "my_plain_reward:Plain"}, scorer=None)
    fn(["p"] * 3, ["a", "b", "c"])
    fn(["p"], ["d"])
    assert fn.calls == 4 and fn.__name__ == "Plain"


def test_room_requests_are_where_the_winner_names_another_intent_than_the_two_towers_first(tiny_world, tmp_path):
    """RG-SFT's room weighting: a query naming (its own text) the intent the two-tower ranks first has no room; a
    query naming the request's second-ranked candidate has; with_copies repeats exactly the room pairs."""
    from rgalign_rl.align.best_of_n import room_requests, with_copies
    from rgalign_rl.ranker.train import RankerData, TrainConfig, save_ranker, score, train_ranker

    torch.set_num_threads(THREADS)
    world = load_world(tiny_world)
    model, enc, _ = train_ranker(world, "two_tower", None, TrainConfig(epochs=1), log=lambda *a: None)
    save_ranker(tmp_path / "tt", model, enc)
    idx = world.indices("train")[:30]
    order = np.argsort(-score(model, RankerData(world, enc), idx), axis=1)
    cand = world.candidates[0][idx]
    text = [it["text"] for it in world.intents]
    first = [text[cand[r, order[r, 0]]] for r in range(len(idx))]
    second = [text[cand[r, order[r, 1]]] for r in range(len(idx))]
    queries = [s if r % 3 == 0 else f for r, (f, s) in enumerate(zip(first, second))]
    room = room_requests(world, tmp_path / "tt", idx, queries)
    np.testing.assert_array_equal(room, np.arange(len(idx)) % 3 == 0)
    pairs = [(int(i), q) for i, q in zip(idx, queries)]
    copied = with_copies(pairs, room, 3)
    assert len(copied) == len(pairs) + 2 * room.sum() and copied[:3] == [pairs[0]] * 3 and copied[3] == pairs[1]
    assert with_copies(pairs, room, 1) == pairs


@pytest.mark.slow(seconds=25)
def test_rg_sft_repeats_the_requests_with_room_and_the_current_kb_and_reports_where_the_two_tower_misses(
        tiny_world, one_process_run, tmp_path):
    """best_of_n.room_weight=3 and current_kb_weight=2 in the loop: RG-SFT trains on the same winners as the shared
    run's, those with room three times, then those served under the current KB (the tiny world's cold intents
    launch inside training) once more: given = n + current, n = winners + 2 x room; both shares recorded, and the
    stage's need accuracy has its "two_tower_misses" part."""
    from rgalign_rl.run import run

    base = json.loads((one_process_run[0] / "state.json").read_text())["done"]["round1/rg_sft"]
    out = copy_run(one_process_run[0], tmp_path / "room", keep=PREFIX)
    run(CONFIG, str(tiny_world), str(out), overrides=["best_of_n.room_weight=3", "best_of_n.current_kb_weight=2"],
        resume=True, until="rg_sft", log=lambda *a: None)
    st = json.loads((out / "state.json").read_text())["done"]["round1/rg_sft"]
    winners = base["train_examples"]["given"]
    room = round(st["room_share"] * winners)
    assert 0 < room < winners
    n = winners + 2 * room
    current = round(st["current_kb_share"] * n)
    assert 0 < current < n
    assert st["train_examples"]["given"] == n + current
    assert 0.0 <= st["need_accuracy"]["two_tower_misses"] <= 1.0


def test_current_kb_requests_start_when_the_newest_intent_first_appears_in_training(tmp_path):
    """best_of_n.current_kb_weight's mask, hand-computed: intent c first appears among a training request's
    candidates at t = 105, so training requests from 105 on are current; an intent first seen in test (d) moves
    nothing; a world whose intents all appear at the first request is current throughout."""
    from test_world import INTENTS, sample, write_world

    from rgalign_rl.align.best_of_n import current_kb_requests

    # c last: a padding id (-1) read as an intent would make c "seen" at t = 100
    intents = INTENTS + [{"intent_id": "d", "text": "voucher"}, {"intent_id": "c", "text": "cancel"}]
    rows = [sample(i, candidates=["a", "b"] + (["c"] if i >= 5 else []) + (["d"] if i >= 10 else []))
            for i in range(12)]  # t = 100 + i; train 0-7, valid 8-9, test 10-11
    world = load_world(write_world(tmp_path / "w", intents=intents, samples=rows))
    assert list(world.indices("train")) == list(range(8))
    np.testing.assert_array_equal(current_kb_requests(world, np.arange(12)), np.arange(12) >= 5)
    flat = load_world(write_world(tmp_path / "flat"))
    assert current_kb_requests(flat, np.arange(12)).all()
    assert current_kb_requests(world, []).shape == (0,)
