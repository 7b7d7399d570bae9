"""One tokenisation: a prompt becomes the same token ids in SFT, DPO, GRPO/RLOO, PPO, generation, last-token
embedding and RG-CL, whatever the tokenizer (with or without a BOS, with or without a chat template).

The rule: a prompt string (in the model's chat template where it has one, :func:`prompt.format_prompt`) is
tokenised *with* the tokenizer's own special tokens, after dropping a leading BOS string that the template
wrote when the tokenizer adds a BOS itself (so the BOS is there exactly once). TRL tokenises non-conversational prompts the same way (the
tokenizer's default ``add_special_tokens=True``), so the trainers are handed :func:`serving_text`; our own
loops call :func:`prompt_ids`. A completion (a latent query) is ``" " + query`` without special tokens.
"""
from __future__ import annotations

import hashlib
import warnings

import torch


def adds_bos(tok) -> bool:
    """Whether tokenising with special tokens puts the BOS in front (Llama, Mistral, Gemma: yes; GPT-2 style
    tokenizers such as SmolLM2's, whose "BOS" is a chat-template token: no)."""
    def ask() -> bool:
        ids = tok("a")["input_ids"]
        return tok.bos_token_id is not None and bool(ids) and ids[0] == tok.bos_token_id

    return _kept_on(tok, "_rgalign_adds_bos", ask)  # asked for every prompt: once per tokenizer instead


def _kept_on(tok, name: str, compute):
    """``compute()`` once per tokenizer object, kept as its attribute ``name`` (computed on every call for a
    tokenizer that takes no attributes)."""
    value = getattr(tok, name, None)
    if value is None:
        value = compute()
        try:
            setattr(tok, name, value)
        except AttributeError:
            pass
    return value


def serving_text(tok, prompt: str) -> str:
    """The prompt without a leading BOS string when the tokenizer adds one itself: tokenising it with special
    tokens then puts the BOS back exactly once."""
    bos = tok.bos_token
    return prompt[len(bos):] if bos and prompt.startswith(bos) and adds_bos(tok) else prompt


# Token ids of prompts already tokenised in this process, per tokenizer: a loop tokenises the same ~55k prompts
# for generation, its length check and last-token embedding at every stage (~50 s of a demo on 2 cores).
_PROMPT_IDS: dict[tuple[str, str], tuple[int, ...]] = {}
_MAX_KEPT = 500_000


def tokenizer_fingerprint(tok) -> str:
    """What decides a tokenizer's output (its full definition and BOS/EOS settings), hashed once per object:
    two loads of the same tokenizer share cached prompt ids, two different tokenizers never do."""
    def digest() -> str:
        backend = getattr(tok, "backend_tokenizer", None)
        text = backend.to_str() if backend is not None else f"{type(tok).__name__}:{tok.name_or_path}:{len(tok)}"
        extra = repr((type(tok).__name__, getattr(tok, "add_bos_token", None), getattr(tok, "add_eos_token", None),
                      sorted(tok.special_tokens_map.items())))
        return hashlib.sha1((text + extra).encode()).hexdigest()

    return _kept_on(tok, "_rgalign_fingerprint", digest)


def prompt_ids(tok, prompts: list[str]) -> list[list[int]]:
    """Each prompt's token ids (the rule above); tokenised once per process and tokenizer."""
    if not prompts:
        return []
    fp = tokenizer_fingerprint(tok)
    unique = dict.fromkeys(prompts)
    todo = [p for p in unique if (fp, p) not in _PROMPT_IDS]
    if todo:
        if len(_PROMPT_IDS) + len(todo) > _MAX_KEPT:
            _PROMPT_IDS.clear()
            todo = list(unique)
        for p, ids in zip(todo, tok([serving_text(tok, p) for p in todo])["input_ids"]):
            _PROMPT_IDS[(fp, p)] = tuple(ids)
    return [list(_PROMPT_IDS[(fp, p)]) for p in prompts]


def completion_ids(tok, queries: list[str]) -> list[list[int]]:
    return tok([" " + q for q in queries], add_special_tokens=False)["input_ids"] if queries else []


def sft_examples(tok, prompts: list[str], queries: list[str]) -> dict[str, list[list[int]]]:
    """{"input_ids", "labels"} of prompt-completion SFT examples, exactly as TRL's SFTTrainer tokenises them one by
    one (the serving prompt + " " + query + EOS as one string; the loss from where it and the prompt alone part,
    TRL's ``common_prefix_length``), in one batched call: TRL's per-example ``Dataset.map`` was ~25 s of a demo."""
    from trl.data_utils import common_prefix_length  # TRL's own rule for where the completion starts

    eos = tok.eos_token
    if not eos:
        raise ValueError("the reasoner's tokenizer has no EOS token: SFT needs one to teach where a query ends")
    full_texts = [serving_text(tok, p) + " " + q for p, q in zip(prompts, queries)]
    full = tok([t if t.endswith(eos) else t + eos for t in full_texts])["input_ids"] if full_texts else []
    labels, merged = [], 0
    for head, ids in zip(prompt_ids(tok, prompts), full):
        n = common_prefix_length(head, ids)
        merged += n < len(head)
        labels.append([-100] * n + ids[n:])
    if merged:  # as TRL warns: the prompt's last tokens merge with the query's first, so training sees them apart
        warnings.warn(f"{merged} of {len(full)} SFT prompts are not a prefix of prompt + query once tokenised; "
                      "the loss starts where they part")
    return {"input_ids": full, "labels": labels}


def sequence_ids(tok, prompts: list[str], queries: list[str]) -> list[list[int]]:
    """Prompt followed by its query, as last-token embedding and RG-CL read them."""
    return [p + c for p, c in zip(prompt_ids(tok, prompts), completion_ids(tok, queries))]


def padded(ids: list[list[int]], pad_id: int, side: str, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) with ``side`` ("left" for generation, "right" for scoring) padding."""
    width = max((len(x) for x in ids), default=0)
    rows, masks = [], []
    for x in ids:
        pad = [pad_id] * (width - len(x))
        rows.append(pad + x if side == "left" else x + pad)
        masks.append([0] * len(pad) + [1] * len(x) if side == "left" else [1] * len(x) + [0] * len(pad))
    return torch.tensor(rows, device=device), torch.tensor(masks, device=device)


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip padding (left, or between a shared head and its tail), as generate() makes them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def context_length(model) -> int | None:
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return getattr(cfg, "max_position_embeddings", None)


def check_fits(model, lengths: list[int], names: list[str], what: str) -> None:
    """Refuses a sequence longer than the model's context, naming its request (``names``: sample ids)."""
    limit = context_length(model)
    if limit is None:
        return
    for n, name in zip(lengths, names):
        if n > limit:
            raise ValueError(f"{what} of request {name!r} is {n} tokens, longer than the model's context ({limit}); "
                             "shorten the prompt (fewer features, the compact prompt style) or use a longer-context model")
