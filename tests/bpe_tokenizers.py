"""Tiny byte-level BPE tokenizers (GPT-2, Qwen2 and Llama layouts), trained here in milliseconds: no download."""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from vrm.config import SyntheticConfig
from vrm.data.synthetic import make_split

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _corpus() -> list[str]:
    split = make_split(SyntheticConfig(num_train=200), "train")
    return [t for row in split for t in (row["prompt"][0]["content"], row["chosen"], row["rejected"])] + \
        ["user assistant system: \n\n \n\t x y"]


def _train(specials: list[str], vocab_size: int = 600) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer)
    return tok


def gpt2_like() -> PreTrainedTokenizerFast:
    """One special token, no chat template, nothing added around a text (GPT-2's layout)."""
    tok = _train(["<|endoftext|>"])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>", pad_token="<|endoftext|>")


def qwen2_like() -> PreTrainedTokenizerFast:
    """ChatML special tokens and chat template (Qwen2's layout)."""
    tok = _train(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=["<|im_start|>", "<|im_end|>"], chat_template=CHATML)


def llama_like() -> PreTrainedTokenizerFast:
    """A beginning-of-sequence token put before every text, no chat template (a Llama base model's layout)."""
    tok = _train(["<s>", "</s>", "<unk>"])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="</s>")
