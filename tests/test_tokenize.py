"""How (prompt, response) become ids, and the over-length policies with their counts."""

from __future__ import annotations

import pytest

from vrm.data.tokenize import PairEncoder, TruncationStats
from vrm.models.encoder import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("minilm")


def test_bidirectional_prompt_prefix_is_the_prompt_encoded_alone(tokenizer):
    enc = PairEncoder(tokenizer, "bidirectional", max_length=64, use_token_types=True)
    out = enc.encode("How do I sort a list?", "Use sorted().")
    alone = tokenizer("How do I sort a list?")["input_ids"]
    assert out.input_ids[:out.prompt_length] == alone
    assert out.input_ids[-1] == tokenizer.sep_token_id
    assert out.token_type_ids == [0] * len(alone) + [1] * (len(out.input_ids) - len(alone))
    assert out.truncated == ""


def test_decoder_plain_fallback_ends_with_eos(tokenizer):
    tokenizer = load_tokenizer("minilm")
    tokenizer.eos_token = tokenizer.sep_token
    enc = PairEncoder(tokenizer, "decoder", max_length=64)
    assert not enc.use_chat_template
    out = enc.encode([{"role": "user", "content": "hi there"}], "hello")
    assert out.input_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(out.input_ids[:out.prompt_length], skip_special_tokens=True) == "hi there"


def test_decoder_chat_template_splits_at_the_generation_prompt(tokenizer):
    tokenizer = load_tokenizer("minilm")
    tokenizer.chat_template = ("{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"
                               "{% if add_generation_prompt %}<assistant> {% endif %}")
    enc = PairEncoder(tokenizer, "decoder", max_length=64)
    assert enc.use_chat_template
    out = enc.encode("what is two plus two", "four")
    prompt = tokenizer.decode(out.input_ids[:out.prompt_length])
    response = tokenizer.decode(out.input_ids[out.prompt_length:])
    assert prompt.endswith("< assistant >") and "two plus two" in prompt
    assert response.startswith("four")


def words(n: int) -> str:
    return " ".join(["apple"] * n)  # "apple" is one wordpiece


@pytest.mark.parametrize("policy, prompt_words, response_words, prompt_len, total, outcome", [
    # [CLS] + 10 + [SEP] = 12 prompt ids, 5 + [SEP] = 6 response ids: fits in 20.
    ("truncate_prompt_left", 10, 5, 12, 18, ""),
    # 12 + 16 > 20: keep [CLS] and the prompt's last 3 ids, the whole response.
    ("truncate_prompt_left", 10, 15, 4, 20, "prompt"),
    # response alone too long: cut it to 20 - 2 ids (keeping [SEP]), then the prompt to [CLS] + 1.
    ("truncate_prompt_left", 10, 30, 2, 20, "both"),
    ("truncate_response", 10, 15, 12, 20, "response"),
    ("truncate_response", 30, 5, 18, 20, "both"),
    ("drop", 10, 15, 12, 28, "dropped"),
])
def test_truncation_policies(tokenizer, policy, prompt_words, response_words, prompt_len, total, outcome):
    enc = PairEncoder(tokenizer, "bidirectional", max_length=20, truncation=policy)
    out = enc.encode(words(prompt_words), words(response_words))
    assert (out.prompt_length, len(out.input_ids), out.truncated) == (prompt_len, total, outcome)
    if outcome != "dropped":
        assert out.input_ids[0] == tokenizer.cls_token_id
        assert out.input_ids[-1] == tokenizer.sep_token_id


def test_truncation_stats_report():
    stats = TruncationStats()
    for outcome in ["", "prompt", "", "dropped", "prompt"]:
        stats.add(outcome)
    assert stats.total == 5 and stats.counts == {"prompt": 2, "dropped": 1}
    assert stats.summary(64, "drop") == "3 of 5 sequences exceeded max_length=64 (policy drop; dropped: 1, prompt: 2)"
    assert TruncationStats(total=2).summary(64, "drop") == "all 2 sequences fit in max_length=64"


def test_bad_policy_is_named(tokenizer):
    with pytest.raises(ValueError, match="truncation='cut'"):
        PairEncoder(tokenizer, "bidirectional", max_length=20, truncation="cut")
