"""The gold reward of the synthetic world: rendered benchmark responses parse back to their exact attributes and cue,
and the documented rule for truncated, repeated, contradictory and unparseable text holds (hand-computed values)."""

from __future__ import annotations

import random

import pytest

from vrm.config import SyntheticConfig
from vrm.data.synthetic import CATEGORIES, make_split, sample_candidates, sample_prompts, true_reward
from vrm.data.synthetic_gold import GoldReward, gold_reward, parse_prompt, parse_response


@pytest.mark.parametrize("cue", ["opener", "filler"])
def test_rendered_candidates_parse_to_their_exact_attributes_and_cue(cue):
    for info in sample_prompts(60, seed=3):
        assert parse_prompt(info["prompt"]) == (info["category"], info["topic"])
        for c in sample_candidates(info, 8, random.Random(7), spurious_prob=0.5, cue=cue):
            parsed = parse_response(info["category"], info["topic"], c["response"])
            assert parsed.attributes == tuple(int(a) for a in c["attributes"]), c
            assert parsed.cue == c["spurious"]
            assert parsed.unparseable_tokens == 0
            assert gold_reward(info["category"], info["topic"], c["response"]) == pytest.approx(c["true_reward"])


def test_benchmark_pairs_parse_to_their_labels_truth():
    rows = make_split(SyntheticConfig(num_test=40, seed=5), "test")
    for row in rows:
        category, topic = parse_prompt(row["prompt"][0]["content"])
        assert category == row["category"]
        for side in ("chosen", "rejected"):
            parsed = parse_response(category, topic, row[side])
            assert list(parsed.attributes) == row[f"attributes_{side}"]
            assert parsed.cue == row[f"spurious_{side}"]


CATEGORY, TOPIC = "coding", "sorting in Python"
FULL = ("Great question! Hi, happy to help. Here is the answer on sorting in Python. Please be careful here. "
        "Cache each result in a dict.")


def test_a_hand_written_response_and_its_gold():
    parsed = parse_response(CATEGORY, TOPIC, FULL)
    assert parsed.attributes == (1, 1, 1, 1, 1)
    assert parsed.cue and parsed.unparseable_fraction == 0
    assert gold_reward(CATEGORY, TOPIC, FULL) == pytest.approx(1.0)
    assert gold_reward(CATEGORY, TOPIC, FULL, cue_cost=0.3) == pytest.approx(0.7)
    # spacing and case do not matter (a word-level tokenizer's decoding)
    assert parse_response(CATEGORY, TOPIC, FULL.replace("!", " !").replace(".", " .").upper()).attributes == (1,) * 5


def test_truncation_drops_the_cut_sentence_and_dilutes_the_reward():
    cut = FULL[:FULL.index("Cache each") + len("Cache each")]  # the detail sentence is cut after two words
    parsed = parse_response(CATEGORY, TOPIC, cut)
    assert parsed.attributes == (1, 1, 1, 1, 0)
    assert parsed.num_tokens == 3 + 6 + 9 + 5 + 2 and parsed.unparseable_tokens == 2
    weights = CATEGORIES[CATEGORY]
    assert gold_reward(CATEGORY, TOPIC, cut) == pytest.approx((1 - 2 / 25) * sum(weights[:4]))


def test_repeated_or_contradictory_sentences_score_zero_for_their_attribute():
    repeated = FULL + " Please be careful here."
    assert parse_response(CATEGORY, TOPIC, repeated).attributes == (1, 1, 1, 0, 1)
    contradicted = FULL + " Ignore the warnings."
    assert parse_response(CATEGORY, TOPIC, contradicted).attributes == (1, 1, 1, 0, 1)
    two_answers = FULL + " I can help with sorting in Python."
    assert parse_response(CATEGORY, TOPIC, two_answers).attributes == (0, 0, 1, 1, 1)
    # a repeated cue is still one cue (the cue is not an attribute)
    assert parse_response(CATEGORY, TOPIC, "Great question! " + FULL).attributes == (1, 1, 1, 1, 1)


def test_off_topic_answers_and_foreign_details():
    off = FULL.replace("sorting in Python", "a sore throat")
    assert parse_response(CATEGORY, TOPIC, off).attributes == (0, 1, 1, 1, 1)
    foreign_detail = FULL.replace("Cache each result in a dict.", "Keep a symptom diary for 7 days.")
    assert parse_response(CATEGORY, TOPIC, foreign_detail).attributes == (0, 1, 1, 1, 1)


def test_garbage_and_empty_text():
    assert gold_reward(CATEGORY, TOPIC, "") == 0.0
    assert parse_response(CATEGORY, TOPIC, "").unparseable_fraction == 1.0
    garbage = "sorting sorting question ! ! careful"
    assert parse_response(CATEGORY, TOPIC, garbage).unparseable_fraction == 1.0
    assert gold_reward(CATEGORY, TOPIC, garbage) == 0.0
    half = "Please be careful here. zz zz zz zz zz"
    assert gold_reward("risky", "fireworks indoors", half) == pytest.approx(0.5 * true_reward("risky", (0, 0, 0, 1, 0)))


def test_gold_reward_function_reads_benchmark_prompts_and_names_a_foreign_one():
    gold = GoldReward(cue_cost=0.1)
    prompt = "How do I fix sorting in Python?\n"
    assert gold([prompt], [FULL]) == [pytest.approx(0.9)]
    with pytest.raises(ValueError, match="not a synthetic benchmark prompt"):
        gold(["What is the weather?"], [FULL])
    with pytest.raises(ValueError, match="unknown synthetic category"):
        parse_response("cooking", TOPIC, FULL)
