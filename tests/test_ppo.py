import numpy as np
import pytest
import torch

from rgalign_rl.align.ppo import PPOConfig, PPOTrainer, gae
from rgalign_rl.reasoner.model import load_reasoner
from rgalign_rl.reasoner.prompt import build_prompts
from rgalign_rl.world import load_world


def test_gae_matches_hand_computation():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.5, 0.5]])
    mask = torch.ones(1, 3)
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    # lam = gamma = 1: advantage = (sum of future rewards) - V
    assert torch.allclose(adv, torch.tensor([[0.5, 0.5, 0.5]]))
    assert torch.allclose(ret, torch.tensor([[1.0, 1.0, 1.0]]))
    adv0, _ = gae(rewards, values, mask, gamma=1.0, lam=0.0)  # one-step TD errors
    assert torch.allclose(adv0, torch.tensor([[0.0, 0.0, 0.5]]))


def _trainer(tiny_world, tiny_reasoner, reward_fn, ckpt=None, **kw):
    world = load_world(tiny_world)
    policy, tok = load_reasoner(tiny_reasoner)
    ref, _ = load_reasoner(tiny_reasoner)
    idx = world.indices("train")[:64]
    rows = [{"prompt": p, "sample_id": world.samples[i]["sample_id"]}
            for p, i in zip(build_prompts(world, idx, tok), idx)]
    torch.manual_seed(0)
    return PPOTrainer(policy, ref, tok, reward_fn, rows, PPOConfig(**kw), checkpoint_dir=ckpt,
                      checkpoint_every=2 if ckpt else 0)


def test_ppo_before_its_first_update_has_ratio_one_and_zero_kl(tiny_world, tiny_reasoner):
    trainer = _trainer(tiny_world, tiny_reasoner, lambda prompts, completions, **kw: [0.0] * len(completions),
                       batch_size=8, mini_batch_size=8, ppo_epochs=2)
    ro = trainer.rollout(trainer.prompts[:8])
    assert ro["kl"].abs().max().item() < 1e-5                    # policy == reference
    first = trainer.update(ro)[0]                                 # computed before any optimizer step
    assert first["policy/ratio"] == pytest.approx(1.0, abs=1e-5)
    assert first["policy/approxkl"] == pytest.approx(0.0, abs=1e-8)
    assert first["policy/clipfrac"] == 0.0


def test_ppo_raises_a_toy_reward(tiny_world, tiny_reasoner):
    # toy reward: short queries are good (a signal the tiny model can reach within a few updates)
    def short(prompts, completions, **kw):
        return [-len(c.split()) / 8 for c in completions]

    trainer = _trainer(tiny_world, tiny_reasoner, short, rollouts=12, batch_size=16, mini_batch_size=8,
                       ppo_epochs=2, learning_rate=1e-3, kl_coef=0.01)
    hist = trainer.train()
    first, last = np.mean([h["objective/scores"] for h in hist[:3]]), np.mean([h["objective/scores"] for h in hist[-3:]])
    assert last > first + 0.1, (first, last)
    assert all(k in hist[0] for k in ("objective/kl", "policy/clipfrac", "loss/value", "objective/scores"))


def test_ppo_resumed_from_its_checkpoint_ends_where_an_uninterrupted_run_ends(tiny_world, tiny_reasoner, tmp_path):
    def short(prompts, completions, **kw):
        return [-len(c.split()) / 10 for c in completions]

    class CrashOnSecondRollout:
        calls = 0

        def __call__(self, prompts, completions, **kw):
            self.calls += 1
            if self.calls == 2:
                raise KeyboardInterrupt("killed")
            return short(prompts, completions)

    kw = dict(batch_size=8, mini_batch_size=8, ppo_epochs=2, rollouts=3)
    straight = _trainer(tiny_world, tiny_reasoner, short, **kw)
    straight.train()
    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        _trainer(tiny_world, tiny_reasoner, CrashOnSecondRollout(), ckpt=ckpt, **kw).train()
    assert (ckpt / "state.json").exists()        # saved after rollout 1
    resumed = _trainer(tiny_world, tiny_reasoner, short, ckpt=ckpt, **kw)
    hist = resumed.train()
    assert [h["step"] for h in hist] == [1, 2, 3] and resumed.reward_calls == straight.reward_calls
    a, b = straight.policy().state_dict(), resumed.policy().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
