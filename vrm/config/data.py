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
    #: Probability that the chosen response (and not the rejected one) carries the spurious feature.
    spurious_corr_train: float = 0.9
    spurious_corr_test: float = 0.9
    spurious_corr_shifted: float = 0.1
    #: Bradley-Terry temperature of the synthetic labeller (lower = less label noise).
    label_temperature: float = 0.15


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
    #: Batch pairs of similar length together to cut padding (training split only).
    group_by_length: bool = False
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
