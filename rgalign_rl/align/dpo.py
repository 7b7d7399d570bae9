"""DPO on ranker-ranked pairs: best vs worst candidate query of a request, kept only when the reward
margin is large enough (a small margin is mostly click noise). TRL's DPOTrainer does the optimisation,
with the RG-SFT model as the reference; LoRA is optional through peft.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .. import dist
from ..config import Annotated, NonNegative, OneOf, Positive, Share
from ..devices import last_checkpoint, per_device, save_trainer_model, serve_dtype, trainer_kwargs
from ..faults import StageFault, finite_loss_callback
from ..reasoner.lora import LoRAFields, lora_config


@dataclass
class DPOSettings(LoRAFields):
    beta: Annotated[float, Positive] = 0.1
    min_margin: Annotated[float, NonNegative] = 0.05  # minimum reward(best) - reward(worst) for a pair to count
    # own: the worst of the policy's own samples | any: the worst candidate
    rejected: Annotated[str, OneOf(("own", "any"))] = "own"
    # 5e-4 collapsed the prototype (75% invalid outputs); 1e-4 was stable
    learning_rate: Annotated[float, Positive] = 1e-4
    epochs: Annotated[float, Positive] = 1.0
    batch_size: Annotated[int, Positive] = 32
    max_pairs: Annotated[int, Positive] = 4000
    # None: no truncation (lengths come from the pairs); a cap drops, counted
    max_length: Annotated[int | None, Positive] = None
    max_dropped: Annotated[float, Share] = 0.01  # share of pairs a cap may drop before the stage fails
    seed: Annotated[int, NonNegative] = 0
    threads: Annotated[int | None, Positive] = None  # None: the run's budget (loop key `threads`)


def build_preference_pairs(prompts: list[str], candidates: list[list[str]], rewards: list[list[float]],
                           min_margin: float, rejectable: list[list[bool]] | None = None) -> list[dict]:
    """One pair per request: its best candidate vs its worst *rejectable* one (default: any), kept when
    they differ by >= min_margin. Rejecting only the policy's own samples pushes down what it actually
    writes; a teacher's bad query is one it rarely writes anyway."""
    pairs = []
    for k, (prompt, cands, rs) in enumerate(zip(prompts, candidates, rewards)):
        order = sorted(range(len(cands)), key=lambda i: rs[i])
        best = order[-1]
        allowed = [i for i in order if rejectable is None or rejectable[k][i]]
        if not allowed:
            continue
        worst = allowed[0]
        if cands[best] != cands[worst] and rs[best] - rs[worst] >= min_margin:
            pairs.append({"prompt": prompt, "chosen": " " + cands[best], "rejected": " " + cands[worst],
                          "margin": rs[best] - rs[worst]})
    return pairs


def run_dpo(model_path: str | Path, pairs: list[dict], out: str | Path, s: DPOSettings | None = None,
            log_dir: str | Path | None = None, callbacks=None):
    """Trains with TRL's DPOTrainer (reference = the model at ``model_path``); returns the log history."""
    import datasets
    from trl import DPOConfig, DPOTrainer

    from ..reasoner.model import load_reasoner
    from ..reasoner.sft import checked_examples
    from ..reasoner.tokens import check_fits, completion_ids, prompt_ids, serving_text

    s = s or DPOSettings()
    if not pairs:
        raise StageFault("DPO has no preference pair: no request's candidates differ by min_margin "
                         f"({s.min_margin}) in reward")
    dist.set_threads(s.threads)
    model, tok = load_reasoner(model_path)
    peft_config = lora_config(s)
    # the reference only scores: in the serving dtype; with LoRA none at all (the base with adapters disabled)
    ref = None if peft_config is not None else load_reasoner(model_path, dtype=serve_dtype())[0]
    pairs = pairs[: s.max_pairs]
    longest = [len(p) + max(len(c), len(r)) + 1 for p, c, r in zip(
        prompt_ids(tok, [p["prompt"] for p in pairs]), completion_ids(tok, [p["chosen"][1:] for p in pairs]),
        completion_ids(tok, [p["rejected"][1:] for p in pairs]))]
    check_fits(model, longest, [p.get("sample_id", f"pair {k}") for k, p in enumerate(pairs)], "a DPO pair")
    # TRL tokenises the prompt with the tokenizer's special tokens: hand it the serving text (reasoner/tokens.py)
    data = datasets.Dataset.from_list([{"prompt": serving_text(tok, p["prompt"]), "chosen": p["chosen"],
                                        "rejected": p["rejected"]} for p in pairs])
    trainer_dir = str(log_dir or Path(out).with_name(Path(out).name + ".trainer"))
    args = DPOConfig(output_dir=trainer_dir, beta=s.beta, learning_rate=s.learning_rate, num_train_epochs=s.epochs,
                     per_device_train_batch_size=per_device(s.batch_size, "align.dpo.batch_size"), logging_steps=1,
                     seed=s.seed, max_length=s.max_length, **trainer_kwargs(checkpoints=True))
    trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=data, processing_class=tok,
                         peft_config=peft_config, callbacks=[finite_loss_callback(), *(callbacks or [])])
    checked_examples(len(data), len(trainer.train_dataset), s.max_dropped, "DPO")
    trainer.train(resume_from_checkpoint=last_checkpoint(trainer_dir))  # None: from the start
    save_trainer_model(trainer, tok, out)
    return trainer.state.log_history
