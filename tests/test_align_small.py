import numpy as np
import torch

from rgalign_rl.align.online import OnlineSettings, run_online
from rgalign_rl.align.rg_cl import LastTokenProjector, rg_cl_loss
from rgalign_rl.reasoner.model import load_reasoner
from rgalign_rl.reasoner.prompt import build_prompts
from rgalign_rl.world import load_world


def test_rg_cl_loss_falls_on_a_fixed_batch(tiny_reasoner):
    torch.manual_seed(0)
    lm, tok = load_reasoner(tiny_reasoner)
    intents = torch.randn(10, 16)
    head = LastTokenProjector(lm.config.hidden_size, 16)
    texts = ["order_status=to_receive; query: track my parcel", "membership=gold; query: reach the next tier",
             "device=web; query: the website does not load", "paylater_state=due; query: pay my bill"]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    cand = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 0, 1]])
    mask = torch.ones_like(cand, dtype=torch.bool)
    pos = torch.tensor([0, 3, 6, 9])
    opt = torch.optim.AdamW(list(lm.parameters()) + list(head.parameters()), lr=1e-3)
    losses = []
    for _ in range(15):
        loss = rg_cl_loss(head(lm, enc["input_ids"], enc["attention_mask"]), intents, cand, mask, pos, 0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_rg_cl_negatives_are_own_candidates_and_batch_positives():
    z = torch.eye(4)[:2] * 10                       # two queries pointing at intents 0 and 1
    intents = torch.eye(4)
    cand = torch.tensor([[0, 2], [1, 2]])
    mask = torch.ones_like(cand, dtype=torch.bool)
    loss = rg_cl_loss(z, intents, cand, mask, torch.tensor([0, 1]), temperature=0.1)  # cosines 1 -> logit 10
    # intent 3 is in nobody's candidates: it must not be a negative
    logits = torch.tensor([[10.0, 0, 0], [10.0, 0, 0]])     # positive, other positive, candidate 2
    assert torch.isclose(loss, torch.nn.functional.cross_entropy(logits, torch.tensor([0, 0])), atol=1e-4)


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
