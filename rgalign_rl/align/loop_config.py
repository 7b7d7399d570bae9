"""The closed loop's config: one dataclass per YAML section (every knob with its default and what it does),
and :func:`loop_config`, which reads a loaded YAML, resolves seeds and refuses unknown names at load time,
before a world is generated or a model trained."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import reward as rewards

from .. import devices
from ..config import Annotated, NonNegative, OneOf, Positive, Share
from ..ranker.model import ARCHS
from ..reasoner.queries import MODES
from ..ranker.train import TrainConfig
from ..reasoner.sft import SFTSettings
from ..reasoner.tiny import TinyReasonerConfig
from ..scoring import ScorerConfig
from .aligners import AlignSettings
from .best_of_n import BestOfNSettings
from .rg_cl import RGCLSettings

QE_ARCHS = tuple(a for a in ARCHS if a != "two_tower")  # what ranker.arch may name (the two-tower is the baseline)


@dataclass
class ReasonerSettings:
    preset: str = "tiny"                   # tiny | smollm2 | a local HF causal-LM folder
    tiny: TinyReasonerConfig = field(default_factory=TinyReasonerConfig)
    warm: SFTSettings = field(default_factory=SFTSettings)
    max_new_tokens: Annotated[int, Positive] = 16
    # auto (bf16 where the device runs it natively) | float32 | bfloat16: snapshots that only generate and embed
    serve_dtype: Annotated[str, OneOf(devices.SERVE_DTYPES)] = "auto"
    # recompute activations in the backward pass of every reasoner trainer: less memory for a big reasoner
    gradient_checkpointing: bool = False


@dataclass
class RankerSettings:
    # the production ranker (the two_tower stage), which QE-Rec nests in: package.module:Class of one's own (the
    # ranker protocol, docs/rankers-and-rewards.md; QE-Rec adds its gated query term on top) | None: the built-in
    class_: str | None = field(default=None, metadata={"key": "class"})
    # qe_rec_gated (trusts a query as far as it earns) | qe_rec (the paper's)
    arch: Annotated[str, OneOf(QE_ARCHS)] = "qe_rec_gated"
    nest: bool = True                      # QE-Rec starts from the two-tower stage's ranker, whose towers stay frozen
    query_mode: Annotated[str, OneOf(MODES)] = "both"  # last_token (the paper's) | text | both
    train: TrainConfig = field(default_factory=TrainConfig)
    calib_kl_weight: Annotated[float, NonNegative] = 0.5  # λ of the KL to the previous ranker during calibration
    calib_epochs: Annotated[int, Positive] = 8
    calib_max_requests: Annotated[int | None, Positive] = None  # training requests re-embedded for calibration
                                                                # (None: all)
    # what the calibration KL's reference (the previous ranker) reads: new (the queries being calibrated on) |
    # old (the ones it was trained on: pulls the final back to the warm queries, costs the control nothing)
    calib_kl_inputs: Annotated[str, OneOf(("new", "old"))] = "new"


@dataclass
class RewardSettings:
    name: str = "clicked_prob"             # a registered reward or module:attr
    k: Annotated[int, Positive] = 3        # for ndcg / hit
    scorer: ScorerConfig = field(default_factory=ScorerConfig)


@dataclass
class EvalSettings:
    max_valid: Annotated[int, Positive] = 3000             # valid requests used for reward checks and rollback
    max_degenerate: Annotated[float, Share] = 0.3          # roll a stage back above this share of degenerate queries
    rollback_tolerance: Annotated[float, NonNegative] = 0.01  # ... or when its valid reward falls by more than this
    control: bool = True                   # calibrate the warm reasoner the same way: what retraining alone gives
    headroom: bool = True                  # QE-Rec on the true need's text (worlds whose oracle has needs)
    # a stage without DPO pairs, with a NaN reward or loss: rollback (keep its starting reasoner, go on) |
    # stop (end the run with the error)
    on_fault: Annotated[str, OneOf(("rollback", "stop"))] = "rollback"


@dataclass
class LogSettings:
    report_to: str = "tensorboard"         # tensorboard | none: TRL trainers and the loop's own scalars
    checkpoint_every: Annotated[int, NonNegative] = 50  # trainer steps between resumable checkpoints (0: none)
    progress: bool = True                  # tqdm bars for long stages (on a terminal)


@dataclass
class LoopConfig:
    seed: Annotated[int, NonNegative] = 0
    rounds: Annotated[int, Positive] = 1
    # torch threads for the whole machine, split between its N processes; None: every CPU this process may run on
    threads: Annotated[int | None, Positive] = None
    # seconds a collective may wait (N processes): main-only stages (ranker fits, RG-CL, evaluation) keep the
    # other ranks waiting in one, so it must outlast the longest; NCCL's own default (600) would not
    dist_timeout_s: Annotated[int, Positive] = 10800
    world: str | None = None               # a world folder; None: generate ShopSim with `shopsim`
    shopsim: dict = field(default_factory=lambda: {"size": "default"})  # ShopSimConfig's keys
    reasoner: ReasonerSettings = field(default_factory=ReasonerSettings)
    ranker: RankerSettings = field(default_factory=RankerSettings)
    reward: RewardSettings = field(default_factory=RewardSettings)
    best_of_n: BestOfNSettings = field(default_factory=BestOfNSettings)
    align: AlignSettings = field(default_factory=AlignSettings)
    rg_cl: RGCLSettings = field(default_factory=RGCLSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    log: LogSettings = field(default_factory=LogSettings)


def loop_config(raw: dict) -> LoopConfig:
    """The loop's config from a loaded YAML (with overrides): every component seed the file leaves unset
    follows the run's ``seed`` (``--seed``). Types, ranges and names are checked here, before a world is
    generated or a model trained, not minutes into a run; every problem is reported at once
    (:class:`~rgalign_rl.config.ConfigError`, with the YAML's file and line where ``raw`` knows them)."""
    from ..config import build, raise_problems, resolve_seeds

    problems: list[tuple[str, str]] = []
    cfg = build(LoopConfig, raw, "", problems)  # a bad value is reported and replaced by its default
    problems += _cross_checks(cfg)
    raise_problems(problems, getattr(raw, "origin", None))
    resolve_seeds(cfg, raw, cfg.seed)
    return cfg


def _cross_checks(cfg: LoopConfig) -> list[tuple[str, str]]:
    """What a field's annotation cannot state: names resolved elsewhere, and constraints between fields."""
    from ..config import build
    from ..world.shopsim.simulator import ShopSimConfig

    out: list[tuple[str, str]] = []
    try:
        rewards.get_reward_class(cfg.reward.name)
    except (KeyError, ImportError, AttributeError, ValueError) as e:
        out.append(("reward.name", str(e.args[0] if e.args else e)))
    preset = cfg.reasoner.preset
    if preset not in ("tiny", "smollm2") and not (Path(preset) / "config.json").is_file():
        out.append(("reasoner.preset", f"{preset!r} is neither a preset (tiny, smollm2) nor a local model folder "
                                       "with config.json"))
    tiny = cfg.reasoner.tiny
    if tiny.hidden_size % tiny.num_attention_heads:
        out.append(("reasoner.tiny.hidden_size", f"must be a multiple of reasoner.tiny.num_attention_heads "
                                                 f"({tiny.num_attention_heads}), got {tiny.hidden_size}"))
    if cfg.rg_cl.epochs > 0 and cfg.ranker.query_mode == "text":
        out.append(("rg_cl.epochs", "RG-CL trains the reasoner's last-token state, which a ranker with "
                                    "ranker.query_mode text does not read; use last_token or both, or rg_cl.epochs: 0"))
    build(ShopSimConfig, cfg.shopsim, "shopsim", out)  # its keys, types and size
    out += _ranker_checks(cfg)
    out += _split_checks(cfg)
    if cfg.align.online.use_vllm:
        import importlib.util

        import torch

        if not torch.cuda.is_available() or importlib.util.find_spec("vllm") is None:
            out.append(("align.online.use_vllm", "needs a CUDA GPU and the vllm package (pip install vllm); "
                                                 "untested here, see docs"))
    return out


def _ranker_checks(cfg: LoopConfig) -> list[tuple[str, str]]:
    """ranker.class importable and of the ranker protocol; reward.scorer.ranker a ranker folder."""
    import json

    from ..ranker.protocol import resolve_ranker_class

    out: list[tuple[str, str]] = []
    r = cfg.ranker
    try:
        own = resolve_ranker_class(r.class_)
    except ValueError as e:
        out.append(("ranker.class", str(e)))
    else:
        if own is not None and r.nest and r.arch != "qe_rec_gated":
            out.append(("ranker.arch", f"{r.arch} mixes the query into the built-in two-tower's towers; over "
                                       f"ranker.class {r.class_} use qe_rec_gated (its query term on top of the "
                                       "class's score) or ranker.nest: false (the class reads the query itself)"))
    folder = cfg.reward.scorer.ranker
    if folder is not None and not (Path(folder) / "config.json").is_file():
        out.append(("reward.scorer.ranker", f"{folder}: not a ranker folder (no config.json; save_ranker writes one)"))
    elif folder is not None:
        try:
            resolve_ranker_class(json.loads((Path(folder) / "config.json").read_text()).get("class"))
        except (ValueError, AttributeError) as e:  # a class that does not import, or a config.json that is not one
            out.append(("reward.scorer.ranker", f"{folder}: {e}"))
    return out


def _split_checks(cfg: LoopConfig) -> list[tuple[str, str]]:
    """Global batches the run's trainers split over its N processes (WORLD_SIZE, set by torchrun and accelerate
    launch): a remainder would give ranks unequal shares, and a collective that some never reach."""
    import os

    n = int(os.environ.get("WORLD_SIZE", "1"))
    a = cfg.align
    batches = {"reasoner.warm.batch_size": cfg.reasoner.warm.batch_size,
               "best_of_n.sft.batch_size": cfg.best_of_n.sft.batch_size}
    if a.algorithm == "dpo":
        batches["align.dpo.batch_size"] = a.dpo.batch_size
    elif a.algorithm == "ppo":
        batches.update({"align.ppo.batch_size": a.ppo.batch_size, "align.ppo.mini_batch_size": a.ppo.mini_batch_size})
    else:
        batches["align.online.prompts_per_step"] = a.online.prompts_per_step
    return [(k, f"{v} does not split over the {n} processes of this launch; use a multiple of {n}")
            for k, v in batches.items() if v % n]
