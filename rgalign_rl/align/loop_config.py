"""The closed loop's config: one dataclass per YAML section (every knob with its default and what it does),
and :func:`loop_config`, which reads a loaded YAML, resolves seeds and refuses unknown names at load time,
before a world is generated or a model trained."""
from __future__ import annotations

from dataclasses import dataclass, field

import reward as rewards

from .. import devices
from ..ranker.model import ARCHS
from ..ranker.train import TrainConfig
from ..reasoner.sft import SFTSettings
from ..reasoner.tiny import TinyReasonerConfig
from ..scoring import ScorerConfig
from .aligners import ALIGNERS, AlignSettings
from .best_of_n import BestOfNSettings
from .rg_cl import RGCLSettings


@dataclass
class ReasonerSettings:
    preset: str = "tiny"                   # tiny | smollm2 | a local HF causal-LM folder
    tiny: TinyReasonerConfig = field(default_factory=TinyReasonerConfig)
    warm: SFTSettings = field(default_factory=SFTSettings)
    max_new_tokens: int = 16
    serve_dtype: str = "float32"           # float32 | bfloat16: snapshots that only generate and embed


@dataclass
class RankerSettings:
    arch: str = "qe_rec_gated"             # qe_rec_gated (trusts a query as far as it earns) | qe_rec (the paper's)
    nest: bool = True                      # QE-Rec starts from the two-tower stage's ranker, whose towers stay frozen
    query_mode: str = "both"               # last_token (the paper's) | text | both
    train: TrainConfig = field(default_factory=TrainConfig)
    calib_kl_weight: float = 0.5           # λ of the KL to the previous ranker during calibration
    calib_epochs: int = 8
    calib_max_requests: int | None = None  # training requests re-embedded for calibration (None: all)


@dataclass
class RewardSettings:
    name: str = "clicked_prob"             # a registered reward or module:attr
    k: int = 3                             # for ndcg / hit
    scorer: ScorerConfig = field(default_factory=ScorerConfig)


@dataclass
class EvalSettings:
    max_valid: int = 3000                  # valid requests used for reward checks and rollback
    max_degenerate: float = 0.3            # roll a stage back above this share of degenerate queries
    rollback_tolerance: float = 0.01       # ... or when its valid reward falls by more than this
    control: bool = True                   # calibrate the warm reasoner the same way: what retraining alone gives
    headroom: bool = True                  # QE-Rec on the true need's text (worlds whose oracle has needs)
    on_fault: str = "rollback"             # a stage without DPO pairs, with a NaN reward or loss: rollback (keep
                                           # its starting reasoner, go on) | stop (end the run with the error)


@dataclass
class LogSettings:
    report_to: str = "tensorboard"         # tensorboard | none: TRL trainers and the loop's own scalars
    checkpoint_every: int = 50             # trainer steps between resumable checkpoints (0: none)
    progress: bool = True                  # tqdm bars for long stages (on a terminal)


@dataclass
class LoopConfig:
    seed: int = 0
    rounds: int = 1
    threads: int = 2
    world: str | None = None               # a world folder; None: generate ShopSim with `shopsim`
    shopsim: dict = field(default_factory=lambda: {"size": "default"})
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
    follows the run's ``seed`` (``--seed``)."""
    from ..config import from_dict, resolve_seeds

    from ..reasoner.queries import MODES

    cfg = from_dict(LoopConfig, raw)
    resolve_seeds(cfg, raw, cfg.seed)
    # names are checked here, before a world is generated or a model trained, not minutes into a run
    if cfg.align.algorithm not in ALIGNERS:
        raise ValueError(f"config key align.algorithm: unknown algorithm {cfg.align.algorithm!r}; "
                         f"known: {', '.join(ALIGNERS)}")
    try:
        rewards.get_reward_class(cfg.reward.name)
    except (KeyError, ImportError, AttributeError, ValueError) as e:
        raise ValueError(f"config key reward.name: {e.args[0] if e.args else e}") from None
    if cfg.eval.on_fault not in ("rollback", "stop"):
        raise ValueError(f"config key eval.on_fault: {cfg.eval.on_fault!r} is not one of rollback, stop")
    if cfg.reasoner.serve_dtype not in devices.SERVE_DTYPES:
        raise ValueError(f"config key reasoner.serve_dtype: {cfg.reasoner.serve_dtype!r} is not one of "
                         f"{', '.join(devices.SERVE_DTYPES)}")
    if cfg.ranker.query_mode not in MODES:
        raise ValueError(f"config key ranker.query_mode: {cfg.ranker.query_mode!r} is not one of {', '.join(MODES)}")
    if cfg.ranker.arch not in ARCHS or cfg.ranker.arch == "two_tower":
        raise ValueError(f"config key ranker.arch: {cfg.ranker.arch!r} is not one of "
                         f"{', '.join(a for a in ARCHS if a != 'two_tower')}")
    if cfg.rg_cl.epochs > 0 and cfg.ranker.query_mode == "text":
        raise ValueError("config key rg_cl.epochs: RG-CL trains the reasoner's last-token state, which a ranker with "
                         "ranker.query_mode text does not read; use last_token or both, or rg_cl.epochs: 0")
    return cfg
