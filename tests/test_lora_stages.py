"""LoRA in every reasoner stage: with ``lora: true`` the stage trains adapters only and saves a whole, merged
model (same tensors as its start) in which only the adapted projections moved; with gradient checkpointing on, as
an 8B reasoner runs (TRL's trainers, GRPO and RG-CL recompute activations in the backward pass)."""
import pytest
import torch
from safetensors.torch import load_file

from conftest import CONFIG
from rgalign_rl.run import run


@pytest.mark.slow(seconds=50)
@pytest.mark.parametrize("algorithm", ["grpo"])  # PPO with LoRA: tests/test_two_processes.py (under ZeRO-3)
def test_every_stage_with_lora_saves_a_merged_model_moving_only_the_adapted_weights(algorithm, tiny_world, tmp_path):
    out = tmp_path / "run"
    lora = ["reasoner.warm.lora=true", "best_of_n.sft.lora=true", "rg_cl.lora=true",
            f"align.{'ppo' if algorithm == 'ppo' else 'online'}.lora=true", f"align.algorithm={algorithm}",
            "eval.control=false", "eval.headroom=false", "eval.max_degenerate=1", "eval.rollback_tolerance=10",
            "ranker.nest=false",  # a QE-Rec from scratch reads the last-token state at once: RG-CL has a gradient
            "reasoner.gradient_checkpointing=true",  # what an 8B reasoner needs (BENCHMARKS.md): LoRA + checkpointing
            # which weights move, not how well: a shorter warm start and a few steps per stage
            "reasoner.warm.epochs=1", "best_of_n.max_requests=64", "rg_cl.max_requests=64", "align.probe.prompts=8",
            "eval.max_valid=50", "log.report_to=none", "log.checkpoint_every=0"]
    run(CONFIG, str(tiny_world), str(out), overrides=lora, log=lambda *a: None)
    chain = [out / "reasoner_init", out / "reasoner_warm", out / "round1" / "rg_sft", out / "round1" / algorithm,
             out / "round1" / "rg_cl"]
    for before_dir, after_dir in zip(chain, chain[1:]):
        before, after = (load_file(d / "model.safetensors") for d in (before_dir, after_dir))
        assert {k: v.shape for k, v in before.items()} == {k: v.shape for k, v in after.items()}, after_dir
        moved = {k for k in before if not torch.equal(before[k], after[k])}
        assert moved and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in moved), (after_dir, moved)
