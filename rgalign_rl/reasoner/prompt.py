"""The verbaliser: a request's features and recent behaviour as the reasoner's instruction prompt.

Two styles. ``compact`` writes ``name=value;`` chunks, which the tiny preset's tokenizer keeps as one
token each (prompts of ~30 tokens, ~10x faster SFT than free text). ``described`` uses the world's
feature descriptions (world.json) in plain English, for real instruction-tuned LLMs. When the
tokenizer has a chat template, the prompt is wrapped in it as a user turn.
"""
from __future__ import annotations

INSTRUCTION = "Write the question this user most likely wants to ask the support chatbot."
QUERY_MARK = "\nquery:"


def _value(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def verbalise(sample: dict, descriptions: dict[str, str] | None = None, style: str = "compact") -> str:
    feats = sample["features"]
    recent = " ".join(sample.get("behavior") or [])
    if style == "compact":
        body = " ".join(f"{k}={_value(feats[k])};" for k in sorted(feats))
        return f"{body} recent: {recent}{QUERY_MARK}"
    if style != "described":
        raise ValueError(f"unknown prompt style {style!r}: compact or described")
    descriptions = descriptions or {}
    lines = [f"- {descriptions.get(k, k.replace('_', ' '))}: {_value(feats[k])}" for k in sorted(feats)]
    return f"{INSTRUCTION}\nUser state:\n" + "\n".join(lines) + f"\nRecent actions: {recent or 'none'}"


def format_prompt(text: str, tokenizer) -> str:
    """Applies the tokenizer's chat template when it has one, so that SFT, generation and embedding
    all see the same prompt string."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    return text


def auto_style(tokenizer) -> str:
    """Instruction-tuned models (with a chat template) read plain English; the tiny preset reads chunks."""
    return "described" if getattr(tokenizer, "chat_template", None) else "compact"


def build_prompts(world, indices, tokenizer, style: str | None = None) -> list[str]:
    style = style or auto_style(tokenizer)
    return [format_prompt(verbalise(world.samples[i], world.feature_descriptions, style), tokenizer)
            for i in indices]
