"""Typed configuration of the data stage (registered with Hydra's ConfigStore in :mod:`vrm.config`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SyntheticConfig:
    """The embedded synthetic preference benchmark (:mod:`vrm.data.synthetic`)."""

    seed: int = 0
    num_train: int = 1200
    num_validation: int = 200
    num_test: int = 400
    num_shifted: int = 400
    #: Cue strength p: probability that the chosen response (and not the rejected one) carries the cue, in the
    #: train, validation and test splits; the shifted split reverses it (1 - p).
    cue_strength: float = 0.75
    #: Per-split overrides of the cue strength (None: ``cue_strength``, and ``1 - cue_strength`` for shifted).
    spurious_corr_train: float | None = None
    spurious_corr_test: float | None = None
    spurious_corr_shifted: float | None = None
    #: The planted cue: ``opener`` (a stock "Great question!" opener) or ``filler`` (a content-free sentence).
    cue: str = "opener"
    #: Bradley-Terry temperature of the synthetic labeller (lower = less label noise; 0.07: the true reward's
    #: accuracy on the labels is 0.91, above the cue's 0.75).
    label_temperature: float = 0.07
    #: Per-response 1-5 ratings of the true attributes, ``clip(round(2 + 2 * attribute + N(0, aspect_noise)), 1, 5)``,
    #: in the canonical aspect columns (never influenced by the cue); False leaves them empty (benchmark v1).
    aspect_ratings: bool = True
    aspect_noise: float = 1.0


@dataclass
class DataConfig:
    """Where preference pairs come from and how they become batches."""

    #: Source format: ``synthetic`` or one of the adapters in :mod:`vrm.data.formats`.
    format: str = "synthetic"
    #: Hub dataset name or local folder for ``datasets.load_dataset`` (public dataset formats).
    path: str | None = None
    #: Dataset configuration / RewardBench subset(s), comma separated.
    subset: str | None = None
    #: Local files (JSON Lines, JSON, CSV or Parquet) per split.
    train: str | None = None
    validation: str | None = None
    test: str | None = None
    #: Seeded split of a dataset that lacks validation/test splits.
    split_seed: int = 0
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    #: Take at most this many rows of each split (None = all).
    max_rows: int | None = None
    #: What to do with a malformed row: ``error`` (stop, naming file, row and field) or ``skip`` (count and report).
    on_bad_row: str = "error"
    #: A tie (the source scores both responses alike: equal ``score_chosen``/``score_rejected``, ratings,
    #: helpfulness, a preference strength of 0, a ``margin`` of 0 in your own files): ``skip`` (count it in the
    #: load report) or ``keep`` (a pair with margin 0; only where the source names a chosen side).
    ties: str = "skip"
    #: How UltraFeedback's rated completions become pairs: best_vs_random | best_vs_worst | all_pairs.
    pairing: str = "best_vs_random"
    #: What ranks UltraFeedback's completions: mean_aspects (mean of the aspect ratings) | overall_score.
    rank_by: str = "mean_aspects"
    #: Names of the per-aspect ratings that rows of your own files carry (empty: aspect_0, aspect_1, ...).
    aspect_names: list[str] = field(default_factory=list)
    #: Tokens per (prompt, response) sequence.
    max_length: int = 64
    #: Over-long pairs: truncate_prompt_left | truncate_response | drop (always counted and reported).
    truncation: str = "truncate_prompt_left"
    batch_size: int = 16
    eval_batch_size: int = 64
    num_workers: int = 0
    #: Batch pairs of similar length together to cut padding (training split only; transformers'
    #: LengthGroupedSampler order, resumable mid-epoch; under DDP grouped by the global batch). On HH-RLHF-like
    #: lengths it lifts real / processed tokens from 0.48 to 0.86 (0.91 with encoder.length_chunks=2), and left
    #: the default run's accuracies within seed noise (docs/performance.md, "Padding in training").
    group_by_length: bool = True
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
