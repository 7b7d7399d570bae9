"""Loading a reasoner, generating latent queries, and last-token query embeddings.

The query embedding is the last layer's hidden state at the last non-pad token of prompt + query,
computed by a frozen snapshot; embeddings are cached on disk per (model fingerprint, text).
"""
from __future__ import annotations

import copy
import hashlib
import weakref
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from .. import dist
from ..devices import progress, serve_tag, unpartitioned
from ..text_encoder import cache_dir
from .prefix import HeadCaches, batch_inputs, plan
from .tokens import positions, prompt_ids, sequence_ids


def _stamp(path: Path, pattern: str) -> tuple:
    """What a file-derived memo is keyed by: the folder and each matching file's name, inode, size, mtime and
    ctime. A snapshot is written whole to a temp folder and renamed into place (``atomic_dir``), so a rewrite
    at the same path has new inodes even where two writes fall in one timestamp tick."""
    def one(f: Path) -> tuple:
        st = f.stat()
        return f.name, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns

    return (str(path.resolve()),) + tuple(one(f) for f in sorted(path.glob(pattern)))


_TOKENIZERS: "OrderedDict[tuple, object]" = OrderedDict()


def load_tokenizer(path: str | Path, trust_remote_code: bool = False):
    """The folder's tokenizer, pad token set. Loaded once per process (the 4 latest snapshots: an evaluation
    reads two) and handed out as copies, as a caller may change its own: an LLM's tokenizer takes ~0.4 s to
    load, a copy ~0.1 s, and a stage asks several times."""
    from transformers import AutoTokenizer

    key = (_stamp(Path(path), "*"), trust_remote_code)
    tok = _TOKENIZERS.get(key)
    if tok is None:
        tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        _TOKENIZERS[key] = tok
        while len(_TOKENIZERS) > 4:
            _TOKENIZERS.popitem(last=False)
    _TOKENIZERS.move_to_end(key)
    try:
        return copy.deepcopy(tok)
    except Exception:  # noqa: BLE001 - a (remote-code) tokenizer that cannot be copied: this caller gets the
        _TOKENIZERS.pop(key)  # loaded one, and the next caller loads it again
        return tok


def load_reasoner(path: str | Path, trust_remote_code: bool = False, dtype=torch.float32):
    """(model, tokenizer) from a local HF causal-LM folder, on the run's device (:func:`dist.device`); never
    executes remote code unless asked."""
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(path, trust_remote_code)
    with unpartitioned():
        model = AutoModelForCausalLM.from_pretrained(str(path), trust_remote_code=trust_remote_code, dtype=dtype)
    model.to(dist.device()).eval()
    return model, tok


_SERVING: "weakref.WeakValueDictionary" = weakref.WeakValueDictionary()


def serving_reasoner(path: str | Path):
    """(model, tokenizer) of a snapshot that only serves (generates, embeds, scores), in the run's serving dtype.
    One copy per snapshot in the process while anything holds it: the rewards of several rankers that read the
    same snapshot, a stage's sampler and its evaluation share it (an 8B reasoner's copy is 15 GB)."""
    from ..devices import serve_dtype

    key = (_stamp(Path(path), "*.safetensors"), str(serve_dtype()))  # a folder rewritten since is loaded again
    model = _SERVING.get(key)
    if model is not None:
        return model, load_tokenizer(path)
    model, tok = load_reasoner(path, dtype=serve_dtype())
    _SERVING[key] = model
    return model, tok


_FINGERPRINTS: dict = {}


def fingerprint(path: str | Path) -> str:
    """A content hash of a saved model's weights (so a cache never mixes two snapshots). Hashed once per
    process and snapshot: every embedding or reward call asks, and an 8B model is 16 GB to read."""
    key = _stamp(Path(path), "*.safetensors")
    if key not in _FINGERPRINTS:
        h = hashlib.sha1()
        for name, *_ in key[1:]:  # the files the key stamped
            h.update(name.encode())
            with open(Path(path) / name, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    h.update(chunk)
        _FINGERPRINTS[key] = h.hexdigest()[:16]
    return _FINGERPRINTS[key]


class TopKSampler:
    """A logits processor that draws the next token itself and scores every other token -inf, for generate()
    run greedy: the distribution of transformers' temperature -> top-k -> top-p sampling, drawn among the k
    kept tokens. torch.multinomial costs ~30 ns per logit on CPU whatever top-k masked: ~70% of the tiny
    reasoner's sampled generation (BENCHMARKS.md section 5, training kernels and sampling)."""

    # warpers a model's generation_config may switch on that this sampler does not apply: with any of them
    # set, sampling goes through transformers' own path
    OTHER_WARPERS = ("min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "top_h")

    def __init__(self, temperature: float, top_k: int, top_p: float, streams: torch.Tensor):
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.streams = streams  # [rows, max_new_tokens]: each row's own uniforms (:func:`row_uniforms`)
        self.uniforms, self.prompt_len = streams, 0

    def start(self, rows, prompt_len: int) -> None:
        """Before generate() on a batch of these rows, whose prompts are ``prompt_len`` tokens wide."""
        self.uniforms, self.prompt_len = self.streams[rows], prompt_len

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
        # inverse CDF with the row's own uniform for this step: a row draws the same whatever batch it is in
        u = self.uniforms[:, input_ids.shape[1] - self.prompt_len].to(scores.device).unsqueeze(1)
        cdf = torch.softmax(vals, dim=-1).cumsum(-1)
        pick = ids.gather(1, torch.searchsorted(cdf, u * cdf[:, -1:]).clamp(max=self.top_k - 1))
        return torch.full_like(scores, float("-inf")).scatter_(1, pick, 0.0)


def row_uniforms(seed: int, keys, n_return: int, steps: int) -> torch.Tensor:
    """[len(keys) * n_return, steps] uniforms, one stream per (seed, key, return index): a request's samples
    depend on the seed and the request alone, not on its batch or on how many processes share the work."""
    return torch.from_numpy(np.stack([np.random.default_rng([seed, int(k), j]).random(steps, np.float32)
                                      for k in keys for j in range(n_return)]))


@torch.no_grad()
def generate_queries(model, tok, prompts: list[str], batch_size: int = 256, max_new_tokens: int = 16,
                     do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 50,
                     num_return_sequences: int = 1, seed: int | None = None, row_keys=None) -> list[str]:
    """Greedy or sampled queries, ``num_return_sequences`` per prompt, in order. Prompts are batched by
    token length (:func:`prefix.plan`: a shared head computed once, tails padded by their own length only), so a
    prompt's query does not depend on its batch.
    Sampling keeps the ``top_k`` most likely tokens (50, transformers' default; 0: all), then ``top_p``,
    and draws each row from its own stream (``seed`` and ``row_keys[i]``, default the prompt's position):
    pass the requests' sample indices as ``row_keys`` to get the same draws however the prompts are split.
    Each process generates
    alone on whole weights (``synced_gpus=False``: after a ZeRO-3 trainer transformers would otherwise wait
    for every rank at every token)."""
    from transformers import LogitsProcessorList

    seed = 0 if seed is None else seed
    n_ret = num_return_sequences
    sampler = None
    if do_sample and TopKSampler.applies(model, top_k):
        keys = range(len(prompts)) if row_keys is None else row_keys
        sampler = TopKSampler(temperature, top_k, top_p, row_uniforms(seed, keys, n_ret, max_new_tokens))
        sampling = {"do_sample": False, "logits_processor": LogitsProcessorList([sampler])}
    elif do_sample:  # transformers' own sampler (top_k 0, or warpers ours lacks): one stream for the call
        torch.manual_seed(seed)
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k}
    else:
        sampling = {"do_sample": False}
    ids = prompt_ids(tok, prompts)
    rows = np.repeat(np.arange(len(prompts)), n_ret)  # row r: prompt rows[r], return index r % n_ret
    seqs = [ids[i] for i in rows]
    out = [""] * len(rows)
    heads = HeadCaches(model)
    for b in progress(plan(tok, [prompts[i] for i in rows], seqs, batch_size), "generate"):
        x, mask = batch_inputs(b, seqs, tok.pad_token_id, model.device)
        if sampler is not None:
            sampler.start(b.rows, x.shape[1])
        gen = model.generate(input_ids=x, attention_mask=mask, max_new_tokens=max_new_tokens,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                             synced_gpus=False,
                             **(heads.for_batch(b.head, len(b.rows)) if b.head else {}), **sampling)
        for r, text in zip(b.rows, tok.batch_decode(gen[:, x.shape[1]:], skip_special_tokens=True)):
            out[r] = text.strip()
    return out


def last_token_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last non-pad token of each row, for left or right padding alike."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (attention_mask.long() * positions).argmax(dim=1)


def last_hidden_states(model, **inputs) -> torch.Tensor:
    """The last layer's hidden states without the [batch, seq, vocab] logits, which cost more than the
    whole backbone for a small model: the decoder alone where the model has one (the same numbers, bit for bit,
    as the whole model's last hidden state; the other layers' states are not kept, and no KV cache is built
    unless a head cache comes in: an 8B reasoner's batch of 256 would hold ~30 GB of them), else the whole
    model with ``logits_to_keep=1`` (the head on one position only)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is not None and decoder is not model:
        cache = {} if "past_key_values" in inputs else {"use_cache": False}
        return decoder(**inputs, **cache).last_hidden_state
    try:
        out = model(**inputs, output_hidden_states=True, logits_to_keep=1)
    except TypeError:  # a model without logits_to_keep
        out = model(**inputs, output_hidden_states=True)
    return out.hidden_states[-1]


@torch.no_grad()
def last_token_embedding(model, tok, prompts: list[str], queries: list[str], batch_size: int = 256) -> np.ndarray:
    """[n, hidden] last-layer hidden state at the last token of prompt + query (:func:`tokens.sequence_ids`).
    Sequences are batched as in :func:`generate_queries` (the last token is the last position, and a row's
    state does not depend on its batch)."""
    ids = sequence_ids(tok, prompts, queries)
    out = np.zeros((len(ids), model.config.get_text_config().hidden_size), np.float32)
    heads = HeadCaches(model)
    for b in plan(tok, prompts, ids, batch_size):
        x, mask = batch_inputs(b, ids, tok.pad_token_id, model.device)
        if b.head:  # the head's keys and values come from its cache; positions skip the padding
            n = len(b.head)
            h = last_hidden_states(model, input_ids=x[:, n:], attention_mask=mask,
                                   position_ids=positions(mask)[:, n:],
                                   **heads.for_batch(b.head, len(b.rows)))
        else:
            h = last_hidden_states(model, input_ids=x, attention_mask=mask)
        out[b.rows] = h[:, -1].float().cpu().numpy()
    return out


class EmbeddingCache:
    """On-disk cache of last-token embeddings for one model snapshot: shards of (keys, vectors), written by the
    main process only. ``embed`` is collective under N processes: each rank embeds its share of what is missing."""

    def __init__(self, model_path: str | Path):
        self.dir = cache_dir() / "last_token" / (fingerprint(model_path) + serve_tag())
        self.table: dict[str, np.ndarray] = {}
        self._read: set[str] = set()
        self.refresh()

    def refresh(self) -> None:
        """Reads the shards written since the last read (by this process or another)."""
        # not the hidden ".NAME.tmp.npz" of a write in flight (or killed): pathlib's glob matches hidden names
        for shard in sorted(f for f in self.dir.glob("*.npz") if not f.name.startswith(".") and f.name not in self._read):
            with np.load(shard) as z:
                self.table.update(zip(z["keys"].tolist(), z["vectors"]))
            self._read.add(shard.name)

    @staticmethod
    def key(prompt: str, query: str) -> str:
        return hashlib.sha1((prompt + "\x00" + query).encode()).hexdigest()

    def read(self, model, tok, prompts: list[str], queries: list[str]) -> np.ndarray:
        """:meth:`embed`'s numbers on one process alone (a reward runs on each rank by itself): what the cache
        holds (shards written since the last read included) is read, the rest embedded here and not written. A
        row's state does not depend on its batch (:func:`last_token_embedding`): the same numbers either way."""
        self.refresh()
        keys = [self.key(p, q) for p, q in zip(prompts, queries)]
        todo = [i for i, k in enumerate(keys) if k not in self.table]
        new = dict(zip(todo, last_token_embedding(model, tok, [prompts[i] for i in todo],
                                                  [queries[i] for i in todo]))) if todo else {}
        if not keys:
            return last_token_embedding(model, tok, [], [])
        return np.stack([new[i] if i in new else self.table[k] for i, k in enumerate(keys)]).astype(np.float32)

    def embed(self, model, tok, prompts: list[str], queries: list[str]) -> np.ndarray:
        keys = [self.key(p, q) for p, q in zip(prompts, queries)]
        todo = sorted({k: i for i, k in enumerate(keys) if k not in self.table}.items())
        if todo:
            mine = todo[dist.shard(len(todo))]
            dist.count("embed", len(mine))
            vecs = last_token_embedding(model, tok, [prompts[i] for _, i in mine], [queries[i] for _, i in mine])
            vecs = np.stack(dist.gather(list(vecs), len(todo)))
            new_keys = [k for k, _ in todo]
            self.table.update(zip(new_keys, vecs))
            if dist.is_main():
                self.dir.mkdir(parents=True, exist_ok=True)
                name = hashlib.sha1("".join(new_keys).encode()).hexdigest()[:16]
                tmp = self.dir / f".{name}.tmp.npz"
                np.savez(tmp, keys=np.array(new_keys), vectors=vecs)
                tmp.replace(self.dir / f"{name}.npz")
                self._read.add(f"{name}.npz")
            dist.barrier()
        return np.stack([self.table[k] for k in keys]).astype(np.float32)
