"""LoRA for any reasoner stage (peft): the warm start, RG-SFT, DPO, PPO, GRPO, RLOO and RG-CL each take
``lora: true`` in their YAML section. Adapters train, the base weights stay frozen, and the stage saves the
merged model, so every later stage (and serving) reads a plain causal LM."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..config import Annotated, Positive


@dataclass
class LoRAFields:
    lora: bool = False              # train LoRA adapters instead of every weight; merged into the saved model
    lora_r: Annotated[int, Positive] = 8  # adapter rank (alpha = 2 * r)
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


def lora_config(s: LoRAFields):
    """peft's LoraConfig for a stage's settings, or None without LoRA."""
    if not s.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=s.lora_r, lora_alpha=2 * s.lora_r, target_modules=s.lora_target_modules, task_type="CAUSAL_LM")


def with_lora(model, s: LoRAFields):
    """``model`` with trainable adapters (our own loops: PPO, RG-CL), or ``model`` itself without LoRA."""
    if not s.lora:
        return model
    from peft import get_peft_model

    return get_peft_model(model, lora_config(s))


def merged(model):
    """The whole model with any adapters folded into its weights."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
