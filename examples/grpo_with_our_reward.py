"""Our reward in your TRL script: TRL's own GRPOTrainer (or RLOOTrainer) trains a run's reasoner, rewarded by the
run's frozen ranker (``reward_from_run``: the reward the loop's aligners used), on the run's training requests.

    python examples/grpo_with_our_reward.py runs/shop --stage rg_sft --steps 4 --out /tmp/grpo [--algo rloo]
"""
import argparse

import datasets
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

from rgalign_rl.reasoner.prompt import build_prompts
from rgalign_rl.reasoner.tokens import serving_text
from rgalign_rl.recommend import reward_from_run, run_serving
from rgalign_rl.world import load_world


def train(run, stage="final", algo="grpo", steps=4, out="/tmp/grpo", requests=64, prompts_per_step=2, generations=4):
    serving = run_serving(run, stage)          # the stage's reasoner and ranker folders, the run's world
    reward = reward_from_run(run, stage)       # reward(prompts, completions, sample_id=[...]) -> list[float]
    model = AutoModelForCausalLM.from_pretrained(serving.reasoner, dtype=torch.float32)  # trained in fp32 on CPU
    tok = AutoTokenizer.from_pretrained(serving.reasoner)
    tok.pad_token = tok.pad_token or tok.eos_token
    world = load_world(serving.source["world"])
    idx = world.indices("train")[:requests]    # the reward reads train/valid requests' clicks (never test's)
    # the prompts the loop writes; serving_text drops a BOS string the tokenizer adds back itself
    data = datasets.Dataset.from_dict({"prompt": [serving_text(tok, p) for p in build_prompts(world, idx, tok)],
                                       "sample_id": [str(world.samples.sample_id[i]) for i in idx]})
    config_cls, trainer_cls = {"grpo": (GRPOConfig, GRPOTrainer), "rloo": (RLOOConfig, RLOOTrainer)}[algo]
    args = config_cls(output_dir=out, max_steps=steps, learning_rate=1e-4, logging_steps=1,
                      per_device_train_batch_size=prompts_per_step * generations, num_generations=generations,
                      max_completion_length=serving.max_new_tokens, use_cpu=True, bf16=False,  # CPU settings
                      report_to="none", save_strategy="no", disable_tqdm=True)
    trainer = trainer_cls(model=model, reward_funcs=reward, args=args, train_dataset=data, processing_class=tok)
    trainer.train()
    trainer.save_model(out)
    return trainer


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run")
    p.add_argument("--stage", default="final")
    p.add_argument("--algo", choices=("grpo", "rloo"), default="grpo")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--out", default="/tmp/grpo")
    a = p.parse_args()
    t = train(a.run, a.stage, a.algo, a.steps, a.out)
    for h in t.state.log_history:
        if "reward" in h:
            print(f"step {h['step']}: reward {h['reward']:.4f}")
    print(f"saved: {a.out}")
