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


class TopKSampler:
    """A logits processor that draws the next token itself and scores every other token -inf, for generate()
    run greedy: the distribution of transformers' temperature -> top-k -> top-p sampling, drawn among the k
    kept tokens. torch.multinomial costs ~30 ns per logit on CPU whatever top-k masked: ~70% of the tiny
    reasoner's sampled generation (BENCHMARKS.md, session 8)."""

    # warpers a model's generation_config may switch on that this sampler does not apply: with any of them
    # set, sampling goes through transformers' own path
    OTHER_WARPERS = ("min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "top_h")

    def __init__(self, temperature: float, top_k: int, top_p: float):
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p

    @classmethod
    def applies(cls, model, top_k: int) -> bool:
        cfg = model.generation_config
        return bool(top_k) and top_k < model.config.get_text_config().vocab_size and all(
            getattr(cfg, w, None) in (None, 1.0, 0.0) for w in cls.OTHER_WARPERS)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        vals, ids = (scores.float() / self.temperature).topk(self.top_k, dim=-1)
        if self.top_p < 1.0:
            from transformers import TopPLogitsWarper

            vals = TopPLogitsWarper(self.top_p)(input_ids, vals)
        pick = ids.gather(1, torch.multinomial(torch.softmax(vals, dim=-1), 1))
        return torch.full_like(scores, float("-inf")).scatter_(1, pick, 0.0)


@torch.no_grad()
def generate_queries(model, tok, prompts: list[str], batch_size: int = 256, max_new_tokens: int = 16,
                     do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 50,
                     num_return_sequences: int = 1, seed: int | None = None,
                     cache_implementation: str | None = None) -> list[str]:
    """Batched generation with left padding; returns num_return_sequences texts per prompt, in order.
    Sampling keeps the ``top_k`` most likely tokens (50, transformers' default; 0: all), then ``top_p``.
    ``cache_implementation``: transformers' KV cache kind (None: its default, dynamic)."""
    from transformers import LogitsProcessorList

    if seed is not None:
        torch.manual_seed(seed)
    tok.padding_side = "left"
    if do_sample and TopKSampler.applies(model, top_k):
        # greedy over the sampler's one-hot scores; the rows are repeated here, as generate() would
        sampling = {"do_sample": False, "logits_processor": LogitsProcessorList([TopKSampler(temperature, top_k, top_p)])}
        repeat, n_return = num_return_sequences, 1
    else:
        sampling = {"do_sample": do_sample, "temperature": temperature if do_sample else None,
                    "top_p": top_p if do_sample else None, "top_k": top_k if do_sample else None}
        repeat, n_return = 1, num_return_sequences
    out: list[str] = []
    for i in progress(range(0, len(prompts), batch_size), "generate", total=-(-len(prompts) // batch_size)):
        batch = tok(prompts[i : i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        batch = {k: v.repeat_interleave(repeat, dim=0) for k, v in batch.items()}
        gen = model.generate(**batch, max_new_tokens=max_new_tokens, num_return_sequences=n_return,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                             cache_implementation=cache_implementation, **sampling)
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
