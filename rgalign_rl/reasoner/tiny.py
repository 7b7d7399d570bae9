"""The ``tiny`` reasoner preset: a tokenizer trained on the world's prompts and teacher queries and a
small Llama built from a config (random init), saved with save_pretrained. Warm-starting it by SFT on
the teachers' queries (``sft.py``) makes it the "general-purpose LLM" before ranking alignment.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..world import World, atomic_dir
from ..config import Annotated, NonNegative, Positive
from .prompt import build_prompts


@dataclass
class TinyReasonerConfig:
    vocab_size: Annotated[int, Positive] = 4000
    hidden_size: Annotated[int, Positive] = 128  # a multiple of num_attention_heads (checked at config load)
    intermediate_size: Annotated[int, Positive] = 344
    num_hidden_layers: Annotated[int, Positive] = 2
    num_attention_heads: Annotated[int, Positive] = 4
    max_position_embeddings: Annotated[int, Positive] = 256
    seed: Annotated[int, NonNegative] = 0


SPECIALS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE whose pre-tokenizer keeps each ``name=value;`` chunk (and each word with its
    leading space) whole, so frequent feature chunks become single tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r" ?[^;\s]+;?|\s+"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIALS)


def build_tiny_reasoner(world: World, out: str | Path, cfg: TinyReasonerConfig | None = None) -> Path:
    """Trains the tokenizer on train-split prompts and teacher queries, builds the Llama, saves both."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = cfg or TinyReasonerConfig()
    train = world.indices("train")
    from .sft import warm_start_pairs

    queries = [q for _, q in warm_start_pairs(world)]
    prompts = build_prompts(world, train, tokenizer=None)
    tok = train_tokenizer(prompts + queries, cfg.vocab_size)
    torch.manual_seed(cfg.seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                         num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
                         num_key_value_heads=cfg.num_attention_heads,
                         max_position_embeddings=cfg.max_position_embeddings, tie_word_embeddings=True,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return Path(out)
