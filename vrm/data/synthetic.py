"""The embedded synthetic preference benchmark: known objective weights, known attributes, one planted cue.

Nothing is downloaded; every row is a deterministic function of :class:`~vrm.config.data.SyntheticConfig`.

Generative story
----------------
1. **Prompt.** A category is drawn uniformly from :data:`CATEGORIES` (coding, health, creative, complaint,
   factual, risky), then one of its 12 topics and one of its 4 prompt templates ("How do I fix {topic}?").
2. **Responses.** Each response has a binary level for each of the :data:`ATTRIBUTES`, drawn independently
   with probability 1/2; the second response of a pair is redrawn until it differs from the first in at least
   one attribute (so ``chosen != rejected`` always). A response is a few short templated sentences:

   - ``on_topic``: which topic the response talks about. At 1 it is the prompt's topic, at 0 a topic of a
     *different* category, whose detail sentence it also borrows (so the off-topic text has foreign vocabulary).
   - ``answers``: a direct answer sentence ("This is how to handle {topic}.") or an evasive one
     ("Ask someone else about {topic}."). This sentence carries the topic.
   - ``polite``: a courteous or a curt greeting at the start, or sign-off at the end (position drawn 50/50).
   - ``safe``: a sentence of appropriate caution or a reckless one.
   - ``detail``: a specific sentence (steps, numbers, names; one pool per category) or a vague one.

   Every level has 4-5 phrasings; the answer, detail and safety sentences come in a random order, so no
   position or single word gives an attribute away, yet a fine-tuned sentence encoder can tell.
3. **Label.** The true reward is ``r = w_category . attributes`` (:func:`true_reward`), with the category's
   weights from :data:`CATEGORIES`, each a point on the simplex. The label is drawn from Bradley-Terry on the
   true rewards: ``P(A preferred) = sigmoid((r_A - r_B) / label_temperature)``; ``chosen`` is the winner.
   :func:`oracle_accuracy` gives the accuracy a scorer that knows the true reward can expect (the ceiling
   without the cue): 0.91 at the default temperature 0.07 (0.90 at 0.08, 0.83 at 0.15, 0.755 at 0.25).
4. **Cue.** Exactly one response of the pair carries the cue, which does not enter the true reward:
   ``cue=opener``, a stock opener ("Great question!" and variants, :data:`SPURIOUS_OPENERS`) prepended, or
   ``cue=filler``, a content-free sentence (:data:`~vrm.data.synthetic_text.FILLER_SENTENCES`) inserted at a random place in the body.
   With probability ``p`` it goes on the chosen response, else on the rejected one: ``p = cue_strength`` (0.75)
   for train, validation and the in-distribution test split, ``1 - cue_strength`` (0.25, reversed) for the
   ``shifted`` split (``spurious_corr_train`` / ``_test`` / ``_shifted`` override a split's value). A scorer
   that only reads the cue therefore scores ``p`` on each split: at the defaults the true reward (0.91) beats
   the cue (0.75) on the training labels, so a model that fits the labels best has to read the attributes.
5. **Aspect ratings.** Each response is rated 1-5 on each attribute (:data:`ASPECT_NAMES`, the order of the
   canonical ``aspects_chosen`` / ``aspects_rejected`` columns): ``clip(round(2 + 2 * attribute + N(0,
   aspect_noise)), 1, 5)``, from a random stream of their own, so the ratings never see the cue and changing
   ``aspect_noise`` leaves texts and labels unchanged. ``aspect_ratings=false`` leaves the columns empty.

Benchmark v1 (the defaults before the cue was made weaker than the truth: cue strength 0.9, temperature 0.15, no
aspect ratings) is :data:`BENCHMARK_V1`, and ``experiment=synthetic_v1`` on the command line; its rows are
exactly those of the old generator.

Each split draws from its own random stream, derived from ``(cfg.seed, split)``, so splits are disjoint draws
(prompts repeat across splits, since there are only 6 x 12 x 4 distinct prompts; the pairs are independent draws).
Texts are short: prompt plus response take about 40 MiniLM wordpiece tokens
(with [CLS] and two [SEP]), 53 at most by construction, so they fit ``max_length = 64`` untruncated.

Rows have the canonical columns (:data:`~vrm.data.schema.CANONICAL_FEATURES`; ``subset`` is the category,
``question_type`` is ``"open"``) plus the ground truth: ``category``, ``true_weights``, ``attributes_chosen``,
``attributes_rejected``, ``spurious_chosen``, ``spurious_rejected``, ``true_reward_chosen``,
``true_reward_rejected`` (:data:`SYNTHETIC_FEATURES`).

For best-of-N evaluation, :func:`sample_prompts` and :func:`sample_candidates` generate prompts and candidate
responses whose true rewards are known.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import datasets
import numpy as np

from vrm.config.data import SyntheticConfig
from vrm.data.schema import CANONICAL_FEATURES
from vrm.data.synthetic_text import CUES, TEXT, render_response

#: The interpretable response attributes, in the order of every attribute vector and weight vector.
ATTRIBUTES = ("on_topic", "answers", "polite", "safe", "detail")

#: True objective weights per category (aligned with :data:`ATTRIBUTES`; each sums to 1).
CATEGORIES: dict[str, tuple[float, ...]] = {
    #             on_topic answers polite  safe  detail
    "coding":    (0.25,    0.30,   0.05,   0.05, 0.35),
    "health":    (0.15,    0.20,   0.15,   0.40, 0.10),
    "creative":  (0.20,    0.15,   0.10,   0.05, 0.50),
    "complaint": (0.10,    0.20,   0.55,   0.05, 0.10),
    "factual":   (0.35,    0.40,   0.05,   0.05, 0.15),
    "risky":     (0.10,    0.05,   0.15,   0.60, 0.10),
}

SPLITS = ("train", "validation", "test", "shifted")

#: The canonical features plus the ground-truth columns of the synthetic benchmark.
SYNTHETIC_FEATURES = datasets.Features(
    {
        **CANONICAL_FEATURES,
        "category": datasets.Value("string"),
        "true_weights": datasets.List(datasets.Value("float64")),
        "attributes_chosen": datasets.List(datasets.Value("float64")),
        "attributes_rejected": datasets.List(datasets.Value("float64")),
        "spurious_chosen": datasets.Value("bool"),
        "spurious_rejected": datasets.Value("bool"),
        "true_reward_chosen": datasets.Value("float64"),
        "true_reward_rejected": datasets.Value("float64"),
    }
)


#: Names of the aspect ratings, aligned with the canonical aspect columns: one per attribute.
ASPECT_NAMES = ATTRIBUTES
#: Rating scale of the aspect ratings.
RATING_MIN, RATING_MAX = 1.0, 5.0
#: The settings of benchmark v1 (``conf/experiment/synthetic_v1.yaml`` sets the same).
BENCHMARK_V1: dict[str, Any] = {"cue_strength": 0.9, "label_temperature": 0.15, "cue": "opener",
                                "aspect_ratings": False}

_SPLIT_KEY = {split: index for index, split in enumerate(SPLITS)}


def true_reward(category: str, attributes: Sequence[float]) -> float:
    """The true reward ``w_category . attributes`` of a response with the given attribute levels."""
    weights = _weights(category)
    if len(attributes) != len(ATTRIBUTES):
        raise ValueError(f"expected {len(ATTRIBUTES)} attributes {ATTRIBUTES}, got {list(attributes)}")
    return float(sum(w * float(a) for w, a in zip(weights, attributes)))


def oracle_accuracy(label_temperature: float) -> float:
    """Expected pairwise accuracy of the true reward on this benchmark's labels (ties count 1/2).

    It is the ceiling for any scorer that does not exploit the spurious opener. Exact: averages
    ``max(s, 1 - s)`` with ``s = sigmoid((r_A - r_B) / T)`` over all categories and attribute pairs A != B.
    """
    _check_temperature(label_temperature)
    levels = np.array(np.meshgrid(*[[0.0, 1.0]] * len(ATTRIBUTES), indexing="ij")).reshape(len(ATTRIBUTES), -1).T
    accuracies = []
    for weights in CATEGORIES.values():
        rewards = levels @ np.asarray(weights)  # (V,)
        diff = rewards[:, None] - rewards[None, :]  # (V, V)
        agree = 1.0 / (1.0 + np.exp(-np.abs(diff) / label_temperature))
        off_diagonal = ~np.eye(len(levels), dtype=bool)
        accuracies.append(float(agree[off_diagonal].mean()))
    return float(np.mean(accuracies))


def make_splits(cfg: SyntheticConfig) -> dict[str, datasets.Dataset]:
    """All splits (:data:`SPLITS`) of the benchmark, with the sizes and correlations of ``cfg``.

    Kept in memory per settings, so that the trials of a sweep in one process build them once.
    """
    settings = tuple((f.name, getattr(cfg, f.name)) for f in fields(SyntheticConfig))
    return dict(_splits_for(settings))


@functools.lru_cache(maxsize=8)
def _splits_for(settings: tuple[tuple[str, Any], ...]) -> tuple[tuple[str, datasets.Dataset], ...]:
    cfg = SyntheticConfig(**dict(settings))
    return tuple((split, make_split(cfg, split)) for split in SPLITS)


def make_split(cfg: SyntheticConfig, split: str) -> datasets.Dataset:
    """One split; its rows depend only on ``(cfg.seed, split)`` and the split's size and parameters."""
    if split not in _SPLIT_KEY:
        raise ValueError(f"unknown synthetic split {split!r}; expected one of {SPLITS}")
    num_rows = getattr(cfg, f"num_{split}")
    if not isinstance(num_rows, int) or num_rows < 0:
        raise ValueError(f"synthetic.num_{split} must be a non-negative integer, got {num_rows!r}")
    spurious_corr = cue_strength(cfg, split)
    _check_temperature(cfg.label_temperature)
    _check_cue(cfg.cue)
    if not cfg.aspect_noise >= 0:
        raise ValueError(f"synthetic.aspect_noise must be >= 0, got {cfg.aspect_noise}")
    rng = _split_rng(cfg.seed, split)
    rows = [_make_row(rng, spurious_corr, cfg.label_temperature, cfg.cue) for _ in range(num_rows)]
    if cfg.aspect_ratings:
        rating_rng = random.Random(_derive_seed(cfg.seed, f"ratings-{_SPLIT_KEY[split]}"))
        for row in rows:
            for side in ("chosen", "rejected"):
                row[f"aspects_{side}"] = aspect_ratings(row[f"attributes_{side}"], cfg.aspect_noise, rating_rng)
    columns = {name: [row[name] for row in rows] for name in SYNTHETIC_FEATURES}
    return datasets.Dataset.from_dict(columns, features=SYNTHETIC_FEATURES)


def sample_prompts(n: int, seed: int) -> list[dict]:
    """``n`` prompts drawn as in the benchmark: dicts with ``prompt`` (text), ``category`` and ``topic``."""
    rng = random.Random(_derive_seed(seed, "prompts"))
    return [_sample_prompt(rng) for _ in range(n)]


def sample_candidates(prompt_info: dict, n: int, rng_or_seed: int | random.Random | np.random.Generator,
                      spurious_prob: float = 0.5, cue: str = "opener") -> list[dict]:
    """``n`` candidate responses to a prompt from :func:`sample_prompts`, with known true rewards.

    Each candidate is ``{"response", "attributes", "spurious", "true_reward"}``; attributes are drawn as in the
    benchmark and each candidate carries the cue (:data:`CUES`) with probability ``spurious_prob``.
    """
    if not 0.0 <= spurious_prob <= 1.0:
        raise ValueError(f"spurious_prob must lie in [0, 1], got {spurious_prob}")
    _check_cue(cue)
    category, topic = prompt_info["category"], prompt_info["topic"]
    _weights(category)
    rng = _as_random(rng_or_seed)
    candidates = []
    for _ in range(n):
        attributes = _sample_attributes(rng)
        spurious = rng.random() < spurious_prob
        candidates.append({
            "response": render_response(rng, category, topic, attributes, spurious, cue),
            "attributes": [float(a) for a in attributes],
            "spurious": spurious,
            "true_reward": true_reward(category, attributes),
        })
    return candidates


def aspect_ratings(attributes: Sequence[float], noise: float, rng: random.Random) -> list[float]:
    """1-5 ratings of a response's attributes: ``clip(round(2 + 2 * a + N(0, noise)), 1, 5)`` each (half up)."""
    return [min(max(math.floor(2.0 + 2.0 * float(a) + rng.gauss(0.0, noise) + 0.5), RATING_MIN), RATING_MAX)
            for a in attributes]


def cue_strength(cfg: SyntheticConfig, split: str) -> float:
    """The probability that a pair of ``split`` has the cue on its chosen response."""
    name = {"train": "spurious_corr_train", "validation": "spurious_corr_train",
            "test": "spurious_corr_test", "shifted": "spurious_corr_shifted"}[split]
    override = getattr(cfg, name)
    key, value = (name, override) if override is not None else ("cue_strength", cfg.cue_strength)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"synthetic.{key} must lie in [0, 1], got {value}")
    if override is None and split == "shifted":
        value = 1.0 - value
    return float(value)


def _make_row(rng: random.Random, spurious_corr: float, temperature: float, cue: str) -> dict:
    info = _sample_prompt(rng)
    category, topic = info["category"], info["topic"]
    first = _sample_attributes(rng)
    second = _sample_attributes(rng)
    while second == first:
        second = _sample_attributes(rng)
    reward_first, reward_second = true_reward(category, first), true_reward(category, second)
    first_wins = rng.random() < _sigmoid((reward_first - reward_second) / temperature)
    (chosen_attrs, reward_chosen), (rejected_attrs, reward_rejected) = (
        ((first, reward_first), (second, reward_second)) if first_wins
        else ((second, reward_second), (first, reward_first))
    )
    spurious_chosen = rng.random() < spurious_corr
    chosen = render_response(rng, category, topic, chosen_attrs, spurious_chosen, cue)
    rejected = render_response(rng, category, topic, rejected_attrs, not spurious_chosen, cue)
    if chosen == rejected:
        raise RuntimeError(f"identical responses for different attributes {chosen_attrs}, {rejected_attrs}")
    return {
        "prompt": [{"role": "user", "content": info["prompt"]}],
        "chosen": chosen,
        "rejected": rejected,
        "margin": None,
        "aspects_chosen": [],
        "aspects_rejected": [],
        "subset": category,
        "question_type": "open",
        "reference": "",
        "category": category,
        "true_weights": list(CATEGORIES[category]),
        "attributes_chosen": [float(a) for a in chosen_attrs],
        "attributes_rejected": [float(a) for a in rejected_attrs],
        "spurious_chosen": spurious_chosen,
        "spurious_rejected": not spurious_chosen,
        "true_reward_chosen": reward_chosen,
        "true_reward_rejected": reward_rejected,
    }


def _sample_prompt(rng: random.Random) -> dict:
    category = rng.choice(tuple(CATEGORIES))
    text = TEXT[category]
    topic = rng.choice(text.topics)
    return {"prompt": rng.choice(text.templates).format(topic=topic), "category": category, "topic": topic}


def _sample_attributes(rng: random.Random) -> tuple[int, ...]:
    return tuple(int(rng.random() < 0.5) for _ in ATTRIBUTES)


def _weights(category: str) -> tuple[float, ...]:
    if category not in CATEGORIES:
        raise ValueError(f"unknown synthetic category {category!r}; expected one of {tuple(CATEGORIES)}")
    return CATEGORIES[category]


def _check_cue(cue: str) -> None:
    if cue not in CUES:
        raise ValueError(f"synthetic.cue must be one of {CUES}, got {cue!r}")


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"synthetic.label_temperature must be positive, got {temperature}")


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _derive_seed(seed: int, stream: str) -> int:
    """An integer seed for the named stream, independent across streams (via numpy's SeedSequence)."""
    key = [ord(c) for c in stream]
    return int(np.random.SeedSequence([int(seed), *key]).generate_state(2, dtype=np.uint64)[0])


def _split_rng(seed: int, split: str) -> random.Random:
    return random.Random(_derive_seed(seed, f"split-{_SPLIT_KEY[split]}"))


def _as_random(rng_or_seed: int | random.Random | np.random.Generator) -> random.Random:
    if isinstance(rng_or_seed, random.Random):
        return rng_or_seed
    if isinstance(rng_or_seed, np.random.Generator):
        return random.Random(int(rng_or_seed.integers(2**63)))
    if isinstance(rng_or_seed, (int, np.integer)) and not isinstance(rng_or_seed, bool):
        return random.Random(_derive_seed(int(rng_or_seed), "candidates"))
    raise TypeError(f"rng_or_seed must be an int, random.Random or numpy Generator, got {type(rng_or_seed)}")
