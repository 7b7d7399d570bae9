"""The verbaliser: a request's features and recent behaviour as the reasoner's instruction prompt.

Three styles. ``compact`` writes ``name=value;`` chunks, which the tiny preset's tokenizer keeps as one
token each (prompts of ~30 tokens, ~10x faster SFT than free text). ``legend``, for real instruction-tuned
LLMs, opens with the instruction and what every field means (the world's feature descriptions, world.json),
then lists the request's fields as ``name=value`` in plain words, leaving out those at no, none or 0: the
same information as ``described`` (every field's description beside its value) in a third of the request's
own tokens, and the head is the same for every request (reasoner/prefix.py computes it once). When the
tokenizer has a chat template, the prompt is wrapped in it as a user turn.
"""
from __future__ import annotations

INSTRUCTION = "Write the question this user most likely wants to ask the support chatbot."
QUERY_MARK = "\nquery:"
HEAD_END = "User state:\n"  # ends the part of a prompt every request shares (reasoner/prefix.py)
STYLES = ("compact", "legend", "described")
MAX_KEPT = 300_000  # prompts a world keeps per style and tokenizer (build_prompts)


def _value(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _words(v) -> str:
    return _value(v).replace("_", " ")


def _left_out(v) -> bool:
    """A field the legend style leaves out: no, none or 0 (the legend says so)."""
    return v is False or v == "none" or (not isinstance(v, bool) and isinstance(v, (int, float)) and v == 0)


def legend(names, descriptions: dict[str, str] | None = None) -> str:
    """The head of a legend-style prompt: the instruction and each field's meaning."""
    descriptions = descriptions or {}
    lines = [f"- {k.replace('_', ' ')}: {descriptions.get(k, k.replace('_', ' '))}" for k in sorted(names)]
    return (f"{INSTRUCTION}\nFields (a field not listed is no, none or 0):\n" + "\n".join(lines) + "\n"
            + HEAD_END)


def verbalise(sample: dict, descriptions: dict[str, str] | None = None, style: str = "compact") -> str:
    feats = sample["features"]
    recent = " ".join(sample.get("behavior") or [])
    if style == "compact":
        body = " ".join(f"{k}={_value(feats[k])};" for k in sorted(feats))
        return f"{body} recent: {recent}{QUERY_MARK}"
    if style == "legend":
        values = ", ".join(f"{k.replace('_', ' ')}={_words(feats[k])}" for k in sorted(feats) if not _left_out(feats[k]))
        actions = ", ".join(_words(a) for a in sample.get("behavior") or []) or "none"
        return legend(feats, descriptions) + f"{values or 'nothing to report'}\nRecent actions: {actions}"
    if style != "described":
        raise ValueError(f"unknown prompt style {style!r}: one of {', '.join(STYLES)}")
    descriptions = descriptions or {}
    lines = [f"- {descriptions.get(k, k.replace('_', ' '))}: {_value(feats[k])}" for k in sorted(feats)]
    return f"{INSTRUCTION}\n{HEAD_END}" + "\n".join(lines) + f"\nRecent actions: {recent or 'none'}"


def format_prompt(text: str, tokenizer) -> str:
    """Applies the tokenizer's chat template when it has one, so that SFT, generation and embedding
    all see the same prompt string."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    return text


def auto_style(tokenizer) -> str:
    """Instruction-tuned models (with a chat template) read plain English; the tiny preset reads chunks."""
    return "legend" if getattr(tokenizer, "chat_template", None) else "compact"


def build_prompts(world, indices, tokenizer, style: str | None = None) -> list[str]:
    """The prompts of samples ``indices``; each written once per world, style and chat template (a loop asks for
    the same requests' prompts at every stage, and a sample's row as a dict is most of the cost)."""
    from .tokens import tokenizer_fingerprint

    style = style or auto_style(tokenizer)
    # a chat template writes the tokenizer's special tokens too: its whole definition decides the prompt
    templated = getattr(tokenizer, "chat_template", None)
    written = world.derived.setdefault(("prompts", style, tokenizer_fingerprint(tokenizer) if templated else ""), {})
    if len(written) > MAX_KEPT:  # a million-request world's legend prompts are ~2 GB: start again
        written.clear()
    out = []
    for i in map(int, indices):
        if i not in written:
            written[i] = format_prompt(verbalise(world.samples[i], world.feature_descriptions, style), tokenizer)
        out.append(written[i])
    return out
