"""Training, scoring, saving and loading rankers.

Loss: ListNet (softmax cross-entropy of the scores against the request's click distribution) plus
λ·KL(reference || ranker) to a reference ranker's scores, which keeps calibration rounds stable.
Early stopping on valid GAUC; the best epoch's weights are kept (a ranker that training starts from is epoch 0).
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .. import dist
from ..config import Annotated, NonNegative, Positive
from ..devices import progress
from ..metrics import group_auc
from ..text_encoder import encode_texts
from ..world import World, atomic_dir
from .features import FeatureEncoder
from .model import RankerConfig, TwoTowerRanker, build_ranker
from .protocol import class_of, class_path, resolve_ranker_class
from .queries import TextQueries

NEG = -1e4  # score of padding candidates


@dataclass
class TrainConfig:
    epochs: Annotated[int, Positive] = 15        # upper bound; early stopping usually ends sooner
    batch_size: Annotated[int, Positive] = 512
    lr: Annotated[float, Positive] = 3e-3
    weight_decay: Annotated[float, NonNegative] = 1e-5
    patience: Annotated[int, NonNegative] = 2     # epochs without a better valid GAUC before stopping
    kl_weight: Annotated[float, NonNegative] = 0.0  # λ of the KL term to a reference ranker
    seed: Annotated[int, NonNegative] = 0


class RankerData:
    """Every sample of a world as tensors the rankers read. ``query``: [n, D], TextQueries or None; held as
    ``query_table`` [m, D] and each row's ``query_codes`` into it (a dense [n, D] is its own table)."""

    def __init__(self, world: World, encoder: FeatureEncoder, query: np.ndarray | TextQueries | None = None):
        key = ("features", json.dumps(encoder.to_json(), sort_keys=True))
        if key not in world.derived:
            world.derived[key] = encoder.transform(world.samples)
        x, b = world.derived[key]
        ids, mask = world.candidates
        self.x, self.behavior = torch.from_numpy(x), torch.from_numpy(b)
        self.cand, self.mask = torch.from_numpy(np.maximum(ids, 0)), torch.from_numpy(mask)
        self.labels = torch.from_numpy(world.labels)
        self.query_codes = self.query_table = None
        if isinstance(query, TextQueries):
            self.query_codes, self.query_table = torch.from_numpy(query.codes), torch.from_numpy(query.table)
        elif query is not None:
            self.query_table = torch.from_numpy(np.asarray(query, dtype=np.float32))
        self.users = world.user_codes
        self.world = world

    def batch(self, idx, device=None):
        """The model inputs of rows ``idx``, on ``device`` (the model's); codes kept as int32, given as int64."""
        q = None if self.query_table is None else self.query_table[idx if self.query_codes is None else self.query_codes[idx]]
        out = self.x[idx].long(), self.behavior[idx].long(), self.cand[idx].long(), q
        return out if device is None else tuple(None if t is None else t.to(device) for t in out)


@torch.no_grad()
def score(model: TwoTowerRanker, data: RankerData, idx: np.ndarray, batch_size: int = 2048) -> np.ndarray:
    """[len(idx), C] scores (padding gets NEG)."""
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for start in range(0, len(idx), batch_size):
        j = torch.as_tensor(idx[start : start + batch_size])
        s = model(*data.batch(j, dev)).cpu()
        out.append(s.masked_fill(~data.mask[j], NEG))
    return torch.cat(out).numpy() if out else np.zeros((0, data.cand.shape[1]), np.float32)


def split_gauc(model, data: RankerData, split: str, idx: np.ndarray | None = None) -> float:
    """GAUC of ``split``'s requests (or of the requests ``idx``)."""
    idx = data.world.indices(split) if idx is None else np.asarray(idx)
    s = score(model, data, idx)
    m = data.mask[idx].numpy()
    users = np.broadcast_to(data.users[idx][:, None], m.shape)[m]
    auc, w = group_auc(users, s[m], data.labels[idx].numpy()[m])
    return float((auc * w).sum() / max(w.sum(), 1))


def listnet_kl_loss(scores, labels, mask, ref_scores=None, kl_weight: float = 0.0):
    logp = F.log_softmax(scores.masked_fill(~mask, NEG), dim=-1)
    n_clicked = labels.sum(-1)
    has = n_clicked > 0
    target = labels / n_clicked.clamp(min=1).unsqueeze(-1)
    loss = -(target * logp).sum(-1)[has].mean() if has.any() else scores.sum() * 0
    if ref_scores is not None and kl_weight > 0:
        p_ref = F.softmax(ref_scores.masked_fill(~mask, NEG), dim=-1)
        kl = (p_ref * (torch.log(p_ref.clamp(min=1e-12)) - logp)).masked_fill(~mask, 0).sum(-1).mean()
        loss = loss + kl_weight * kl
    return loss


def train_ranker(world: World, arch: str, query: np.ndarray | None, cfg: TrainConfig | None = None,
                 reference: TwoTowerRanker | None = None, ref_query: np.ndarray | None = None,
                 init: TwoTowerRanker | None = None, encoder: FeatureEncoder | None = None, log=print,
                 nest: TwoTowerRanker | None = None, train_indices: np.ndarray | None = None,
                 frozen_towers: bool | None = None, ranker_class: type | None = None,
                 stop_indices: np.ndarray | None = None, **model_kw):
    """Trains a ranker on the world's train split; returns (model, encoder, history).

    ``init``: a trained ranker to continue from (calibration). ``nest``: a trained two-tower whose towers
    initialise a QE-Rec whose query paths start at zero, so training starts from the baseline's scores.
    Either way the starting point is epoch 0 of early stopping: training keeps it unless an epoch beats it
    on valid, so it never returns a ranker worse on valid than the one it started from.
    ``train_indices``: train on these requests only (default: the train split); ``stop_indices``: early stopping
    reads the GAUC of these requests (default: the valid split). ``frozen_towers``: the user and
    intent towers (the two-tower part) stay as they start; default: frozen when nested, so the two-tower path
    stays exactly the trained two-tower (calibrating a nested ranker passes True to keep it so).
    ``ranker_class``: a ranker class of one's own (ranker/protocol.py) instead of the built-in of ``arch``;
    a ``nest`` of such a class gets QE-Rec's gated query term on top of its score (``QERecOnTop``)."""
    cfg = cfg or TrainConfig()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    train_idx = world.indices("train") if train_indices is None else np.asarray(train_indices)
    encoder = encoder or FeatureEncoder.fit(world.samples, train_idx)
    data = RankerData(world, encoder, query)
    if init is not None:
        model = copy.deepcopy(init)
    else:
        text = torch.from_numpy(encode_texts([it["text"] for it in world.intents]))
        mcfg = RankerConfig(arch=arch, cardinalities=encoder.cardinalities(),
                            behavior_vocab=len(encoder.behavior_vocab) + 1, n_intents=len(world.intents),
                            query_dim=0 if query is None else query.shape[1], **model_kw)
        own = class_of(nest)[0] if nest is not None else ranker_class
        model = build_ranker(mcfg, text, own, on_top=own is not None and nest is not None)
        if nest is not None and own is not None:  # the query term on top of a ranker of one's own
            model.base.load_state_dict(nest.state_dict())
            model.start_from_baseline()
        elif nest is not None:
            _, unexpected = model.load_state_dict(nest.state_dict(), strict=False)
            assert not unexpected, unexpected
            model.start_from_baseline()
    if (nest is not None) if frozen_towers is None else frozen_towers:  # default: frozen when nested
        for name, p in model.named_parameters():
            p.requires_grad_(not name.startswith(getattr(model, "BASELINE", ("user.", "intent."))))
    ref_scores = None
    if reference is not None and cfg.kl_weight > 0:
        # every trained or loaded ranker carries its own feature encoder and reads its own query embeddings
        ref_data = RankerData(world, FeatureEncoder.from_json(reference.encoder_json), ref_query)
        ref_scores = torch.from_numpy(score(reference, ref_data, np.arange(len(world.samples))))
    dev = dist.device()
    model.to(dev)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay)
    best, best_state, history, bad = -1.0, None, [], 0
    if nest is not None or init is not None:
        best, best_state = split_gauc(model, data, "valid", stop_indices), copy.deepcopy(model.state_dict())
        history.append({"epoch": 0, "loss": None, "valid_gauc": best})
    for epoch in progress(range(cfg.epochs), f"train {arch}"):
        model.train()
        order = rng.permutation(train_idx)
        total = 0.0
        for start in range(0, len(order), cfg.batch_size):
            j = torch.as_tensor(order[start : start + cfg.batch_size])
            s = model(*data.batch(j, dev))
            loss = listnet_kl_loss(s, data.labels[j].to(dev), data.mask[j].to(dev),
                                   None if ref_scores is None else ref_scores[j].to(dev), cfg.kl_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(j)
        valid = split_gauc(model, data, "valid", stop_indices)
        history.append({"epoch": epoch + 1, "loss": total / len(order), "valid_gauc": valid})
        log(f"  epoch {epoch + 1}: loss {total / len(order):.4f}  valid GAUC {valid:.4f}")
        if valid > best:
            best, best_state, bad = valid, copy.deepcopy(model.state_dict()), 0
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    model.encoder_json = encoder.to_json()
    return model, encoder, history


def save_ranker(out: str | Path, model: TwoTowerRanker, encoder: FeatureEncoder, extra: dict | None = None) -> Path:
    """``model``'s folder: model.safetensors (its state) and config.json (its cfg, feature encoder and ``extra``;
    for a ranker class of one's own also ``class``, and ``query_on_top`` when QE-Rec's query term is on top)."""
    own, on_top = class_of(model)
    state = model.state_dict()
    if own is not None and not any(k == "text_emb" or k.endswith(".text_emb") for k in state):
        raise ValueError(f"{class_path(own)} keeps no text_emb buffer: register the text_emb it is built with "
                         "(register_buffer), so that its folder can rebuild it (ranker/protocol.py)")
    with atomic_dir(out) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp / "model.safetensors"))
        meta = {"ranker": model.cfg.to_dict(), "features": encoder.to_json(), **(extra or {})}
        if own is not None:
            meta.update({"class": class_path(own), **({"query_on_top": True} if on_top else {})})
        (tmp / "config.json").write_text(json.dumps(meta, indent=1) + "\n")
    return Path(out)


def load_ranker(path: str | Path) -> tuple[TwoTowerRanker, FeatureEncoder, dict]:
    """(the ranker saved in folder ``path``, built-in or of a class of one's own, in eval mode on the process's
    device; its feature encoder; its config.json)."""
    path = Path(path)
    meta = json.loads((path / "config.json").read_text())
    state = load_file(str(path / "model.safetensors"))
    text = next(v for k, v in state.items() if k == "text_emb" or k.endswith(".text_emb"))  # intent. / base.
    try:
        own = resolve_ranker_class(meta.get("class"))
    except ValueError as e:
        raise ValueError(f"ranker folder {path}: class {e}") from None
    model = build_ranker(RankerConfig(**meta["ranker"]), text, own, on_top=bool(meta.get("query_on_top")))
    model.load_state_dict(state)
    model.to(dist.device()).eval()
    model.encoder_json = meta["features"]
    return model, FeatureEncoder.from_json(meta["features"]), meta
