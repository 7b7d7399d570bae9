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


@dataclass
class RankerSettings:
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
    threads: Annotated[int, Positive] = 2
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
    return out
