"""How (prompt, response) become ids, and the over-length policies with their counts."""

from __future__ import annotations

import bpe_tokenizers
import pytest
import torch
from transformers import AutoTokenizer

from vrm.data.contract import contract_tokenizer, reproduces_legacy_rule
from vrm.data.schema import as_messages, prompt_text
from vrm.data.tokenize import PairEncoder, TruncationStats
from vrm.models.encoder import load_tokenizer
from vrm.models.modeling_vrm import find_prompt_lengths


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("minilm")


def test_bidirectional_prompt_prefix_is_the_prompt_encoded_alone(tokenizer):
    enc = PairEncoder(tokenizer, "bidirectional", max_length=64, use_token_types=True)
    out = enc.encode("How do I sort a list?", "Use sorted().")
    alone = tokenizer("How do I sort a list?")["input_ids"]
    assert out.input_ids[:out.prompt_length] == alone
    assert out.input_ids == alone + tokenizer("Use sorted().", add_special_tokens=False)["input_ids"] + [102]
    assert out.token_type_ids == [0] * len(alone) + [1] * (len(out.input_ids) - len(alone))
    assert out.truncated == ""


PAIRS = [
    ("How do I sort a list?", "Use sorted()."),
    ("  Leading and trailing spaces  ", "  Hello\nworld  "),
    ("Tabs\tand\n\nblank lines", "\nA response that starts with a newline"),
    ("Unicode: café, naïve, 東京", "¡Sí! Ünïcödé 🙂"),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a fruit."},
      {"role": "assistant", "content": "An apple."}, {"role": "user", "content": "And a red one?"}], "A strawberry."),
    ("", ""),
]
TOKENIZERS = {"minilm_bidirectional": ("bidirectional", lambda: load_tokenizer("minilm")),
              "minilm_decoder": ("decoder", lambda: load_tokenizer("minilm")),
              "gpt2_like": ("decoder", bpe_tokenizers.gpt2_like),
              "qwen2_like": ("decoder", bpe_tokenizers.qwen2_like),
              "llama_like": ("decoder", bpe_tokenizers.llama_like)}


def conversation(prompt, response: str) -> list[dict]:
    return as_messages(prompt) + [{"role": "assistant", "content": response}]


@pytest.mark.parametrize("name", sorted(TOKENIZERS))
def test_training_ids_equal_every_client_rendering_of_the_exported_tokenizer(name, tmp_path):
    """The rule training tokenises by gives exactly the ids a client gets from the exported tokenizer: through its
    chat template, from the rendered text with the tokenizer's default special tokens, and (plain template) from
    text/text_pair; and the model's boundary rule finds the prompt length training recorded."""
    kind, load = TOKENIZERS[name]
    run_tokenizer = load()
    enc = PairEncoder(run_tokenizer, kind, max_length=512)
    contract_tokenizer(run_tokenizer, enc.contract, kind).save_pretrained(tmp_path)
    exported = AutoTokenizer.from_pretrained(tmp_path)
    assert exported.eos_token is not None and exported.chat_template == enc.contract.chat_template
    from_export = PairEncoder(exported, kind, max_length=512)  # reads the contract the tokenizer carries
    for prompt, response in PAIRS:
        out = enc.encode(prompt, response)
        assert from_export.encode(prompt, response) == out
        chat = conversation(prompt, response)
        assert exported.apply_chat_template(chat, tokenize=True, return_dict=True)["input_ids"] == out.input_ids
        rendered = exported.apply_chat_template(chat, tokenize=False)
        assert exported(rendered)["input_ids"] == out.input_ids
        assert "token_type_ids" not in exported(rendered)
        ids = torch.tensor([out.input_ids])
        assert find_prompt_lengths(ids, torch.ones_like(ids), enc.contract.prompt_end_ids).item() == out.prompt_length
        if name != "qwen2_like" and isinstance(prompt, str) and prompt:  # (an empty text gives no ids at all)
            assert exported(text=prompt, text_pair=response)["input_ids"] == out.input_ids


@pytest.mark.parametrize("name", sorted(TOKENIZERS))
def test_prompt_part_is_the_plain_text_or_the_generation_prompt(name):
    kind, load = TOKENIZERS[name]
    tok = load()
    enc = PairEncoder(tok, kind, max_length=512)
    prompt = [{"role": "user", "content": "Name a fruit."}, {"role": "assistant", "content": "An apple."},
              {"role": "user", "content": "And a red one?"}]
    out = enc.encode(prompt, "A strawberry.")
    head = tok.decode(out.input_ids[:out.prompt_length])
    if name == "qwen2_like":  # the marker is the generation prompt's special token
        assert head.endswith("And a red one?<|im_end|>\n<|im_start|>")
        assert tok.decode(out.input_ids[out.prompt_length:]) == "assistant\nA strawberry.<|im_end|>\n"
    else:  # prompt_text's rendering with the tokenizer's leading special token, then the separator
        expected = tok(prompt_text(prompt))["input_ids"]
        marker = list(enc.contract.prompt_end_ids)
        assert out.input_ids[:out.prompt_length] == (expected if expected[-1:] == marker else expected + marker)


def test_only_bert_like_tokenizers_reproduce_the_pre_contract_rule():
    bert = load_tokenizer("minilm")
    assert reproduces_legacy_rule(bert, "bidirectional", True) and reproduces_legacy_rule(bert, "decoder", True)
    assert not reproduces_legacy_rule(bpe_tokenizers.gpt2_like(), "decoder", True)
    assert not reproduces_legacy_rule(bpe_tokenizers.llama_like(), "decoder", True)
    assert not reproduces_legacy_rule(bpe_tokenizers.qwen2_like(), "decoder", True)


def test_truncation_keeps_the_marker_so_the_model_finds_the_same_boundary():
    tok = bpe_tokenizers.qwen2_like()
    for policy in ("truncate_prompt_left", "truncate_response"):
        enc = PairEncoder(tok, "decoder", max_length=12, truncation=policy)
        out = enc.encode("a long prompt " * 20, "a long response " * 20)
        assert len(out.input_ids) == 12 and out.truncated == "both"
        ids = torch.tensor([out.input_ids])
        assert find_prompt_lengths(ids, torch.ones_like(ids), enc.contract.prompt_end_ids).item() == out.prompt_length


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
