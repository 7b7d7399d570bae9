"""Loading a reasoner, generating latent queries, and last-token query embeddings.

The query embedding is the last layer's hidden state at the last non-pad token of prompt + query,
computed by a frozen snapshot; embeddings are cached on disk per (model fingerprint, text).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from ..devices import progress, unpartitioned
from ..text_encoder import cache_dir


def load_tokenizer(path: str | Path, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_reasoner(path: str | Path, trust_remote_code: bool = False, dtype=torch.float32):
    """(model, tokenizer) from a local HF causal-LM folder; never executes remote code unless asked."""
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(path, trust_remote_code)
    with unpartitioned():
        model = AutoModelForCausalLM.from_pretrained(str(path), trust_remote_code=trust_remote_code, dtype=dtype)
    model.eval()
    return model, tok


def fingerprint(path: str | Path) -> str:
    """A content hash of a saved model's weights (so a cache never mixes two snapshots)."""
    h = hashlib.sha1()
    for f in sorted(Path(path).glob("*.safetensors")):
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


@torch.no_grad()
def generate_queries(model, tok, prompts: list[str], batch_size: int = 256, max_new_tokens: int = 16,
                     do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                     num_return_sequences: int = 1, seed: int | None = None,
                     cache_implementation: str | None = None) -> list[str]:
    """Batched generation with left padding; returns num_return_sequences texts per prompt, in order.
    ``cache_implementation``: transformers' KV cache kind (None: its default, dynamic)."""
    if seed is not None:
        torch.manual_seed(seed)
    tok.padding_side = "left"
    out: list[str] = []
    for i in progress(range(0, len(prompts), batch_size), "generate", total=-(-len(prompts) // batch_size)):
        batch = tok(prompts[i : i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        gen = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=do_sample,
                             temperature=temperature if do_sample else None, top_p=top_p if do_sample else None,
                             num_return_sequences=num_return_sequences, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id, cache_implementation=cache_implementation)
        texts = tok.batch_decode(gen[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        out += [t.strip() for t in texts]
    return out


def last_token_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last non-pad token of each row, for left or right padding alike."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.long() * positions).argmax(dim=1)


def last_hidden_states(model, **inputs) -> torch.Tensor:
    """The last layer's hidden states without the [batch, seq, vocab] logits, which cost more than the
    whole backbone for a small model (``logits_to_keep=1``: the head runs on one position only)."""
    try:
        out = model(**inputs, output_hidden_states=True, logits_to_keep=1)
    except TypeError:  # a model without logits_to_keep
        out = model(**inputs, output_hidden_states=True)
    return out.hidden_states[-1]


@torch.no_grad()
def last_token_embedding(model, tok, prompts: list[str], queries: list[str], batch_size: int = 256,
                         padding_side: str = "right") -> np.ndarray:
    """[n, hidden] last-layer hidden state at the last non-pad token of prompt + query."""
    tok.padding_side = padding_side
    out = []
    for i in range(0, len(prompts), batch_size):
        texts = [p + " " + q for p, q in zip(prompts[i : i + batch_size], queries[i : i + batch_size])]
        batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        hidden = last_hidden_states(model, **batch)
        pos = last_token_positions(batch["attention_mask"])
        out.append(hidden[torch.arange(len(texts)), pos].float().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.hidden_size), np.float32)


class EmbeddingCache:
    """On-disk cache of last-token embeddings for one model snapshot: shards of (keys, vectors)."""

    def __init__(self, model_path: str | Path):
        self.dir = cache_dir() / "last_token" / fingerprint(model_path)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.table: dict[str, np.ndarray] = {}
        for shard in sorted(self.dir.glob("*.npz")):
            with np.load(shard) as z:
                self.table.update(zip(z["keys"].tolist(), z["vectors"]))

    @staticmethod
    def key(prompt: str, query: str) -> str:
        return hashlib.sha1((prompt + "\x00" + query).encode()).hexdigest()

    def embed(self, model, tok, prompts: list[str], queries: list[str]) -> np.ndarray:
        keys = [self.key(p, q) for p, q in zip(prompts, queries)]
        todo = sorted({k: i for i, k in enumerate(keys) if k not in self.table}.items())
        if todo:
            idx = [i for _, i in todo]
            vecs = last_token_embedding(model, tok, [prompts[i] for i in idx], [queries[i] for i in idx])
            new_keys = [k for k, _ in todo]
            self.table.update(zip(new_keys, vecs))
            name = hashlib.sha1("".join(new_keys).encode()).hexdigest()[:16]
            tmp = self.dir / f".{name}.tmp.npz"
            np.savez(tmp, keys=np.array(new_keys), vectors=vecs)
            tmp.replace(self.dir / f"{name}.npz")
        return np.stack([self.table[k] for k in keys]).astype(np.float32)
