import math

from rgalign_rl.align.dpo import DPOSettings, build_preference_pairs, run_dpo
from rgalign_rl.reasoner.model import load_reasoner
from rgalign_rl.reasoner.prompt import build_prompts
from rgalign_rl.world import load_world


def test_build_preference_pairs_keeps_best_vs_worst_above_the_margin():
    pairs = build_preference_pairs(["p1", "p2", "p3"], [["a", "b", "c"], ["a", "b"], ["same", "same"]],
                                   [[0.1, 0.5, 0.3], [0.30, 0.32], [0.0, 1.0]], min_margin=0.05)
    assert pairs == [{"prompt": "p1", "chosen": " b", "rejected": " a", "margin": 0.4}]
    # rejecting only the policy's own samples: "a" is a teacher's, so the worst own sample "c" is rejected
    own = build_preference_pairs(["p1"], [["a", "b", "c"]], [[0.1, 0.5, 0.3]], 0.05, [[False, True, True]])
    assert own == [{"prompt": "p1", "chosen": " b", "rejected": " c", "margin": 0.2}]
    assert build_preference_pairs(["p1"], [["a", "b"]], [[0.1, 0.5]], 0.05, [[False, False]]) == []


def test_dpo_loss_is_ln2_at_step_one(tiny_world, tiny_reasoner, tmp_path):
    world = load_world(tiny_world)
    _, tok = load_reasoner(tiny_reasoner)
    prompts = build_prompts(world, world.indices("train")[:16], tok)
    pairs = [{"prompt": p, "chosen": " track where my parcel is now", "rejected": " question about my wallet"}
             for p in prompts]
    hist = run_dpo(tiny_reasoner, pairs, tmp_path / "dpo", DPOSettings(batch_size=8, epochs=1), log_dir=tmp_path / "log")
    first = next(h for h in hist if "loss" in h)
    assert abs(first["loss"] - math.log(2)) < 1e-3
    assert (tmp_path / "dpo" / "config.json").exists()
