"""Turn (prompt, response) into token ids: one rule, used by training, scoring and export.

A sequence is the prompt's tokens followed by the response's tokens; ``prompt_length`` records where
the prompt ends, so the model can read h(x) from the same ids.

- Bidirectional encoders (BERT-like): ``tokenizer(prompt)`` with its special tokens ([CLS] p [SEP]),
  then the response's tokens and a closing separator; token types 0 for the prompt, 1 for the response
  when the encoder has token types. The prompt prefix is exactly the prompt encoded on its own.
- Decoder-only encoders: with a chat template, the prompt is the template applied to the prompt
  messages with the generation prompt, the response is the rest of the template applied to the whole
  conversation. Without one (documented fallback) the prompt is its plain text (see
  :func:`vrm.data.schema.prompt_text`) followed by a blank line, and the response is followed by the
  end-of-sequence token, where the reward is read.

Pairs longer than ``max_length`` are handled by an explicit policy, counted and reported:
``truncate_prompt_left`` (drop prompt tokens from the left, after any leading special token; if the
response alone is still too long it is cut too), ``truncate_response`` (cut the response's tail, keeping
its closing token; then the prompt's left if still needed) or ``drop``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

from vrm.data.schema import Message, as_messages, prompt_text

log = logging.getLogger(__name__)

TRUNCATION_POLICIES = ("truncate_prompt_left", "truncate_response", "drop")
#: Keep at least this many prompt content tokens when truncating the prompt.
MIN_PROMPT_TOKENS = 1


@dataclass
class EncodedSequence:
    input_ids: list[int]
    prompt_length: int
    token_type_ids: list[int] | None = None
    #: What truncation did to this sequence: "" (nothing), "prompt", "response", "both", or "dropped".
    truncated: str = ""


@dataclass
class TruncationStats:
    """Counts of over-long sequences per outcome; reported after tokenisation."""

    total: int = 0
    counts: Counter = field(default_factory=Counter)

    def add(self, outcome: str) -> None:
        self.total += 1
        if outcome:
            self.counts[outcome] += 1

    def summary(self, max_length: int, policy: str) -> str:
        over = sum(self.counts.values())
        if not over:
            return f"all {self.total} sequences fit in max_length={max_length}"
        parts = ", ".join(f"{k}: {v}" for k, v in sorted(self.counts.items()))
        return f"{over} of {self.total} sequences exceeded max_length={max_length} (policy {policy}; {parts})"


class PairEncoder:
    """Tokenises (prompt, response) per the module rule with a truncation policy."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, encoder_kind: str, max_length: int,
                 truncation: str = "truncate_prompt_left", use_token_types: bool = False,
                 use_chat_template: bool = True):
        if truncation not in TRUNCATION_POLICIES:
            raise ValueError(f"truncation={truncation!r} is not one of {TRUNCATION_POLICIES}")
        if max_length < 4:
            raise ValueError(f"max_length={max_length} is too small for a prompt and a response")
        self.tokenizer = tokenizer
        self.encoder_kind = encoder_kind
        self.max_length = max_length
        self.truncation = truncation
        self.use_token_types = use_token_types
        self.use_chat_template = use_chat_template and getattr(tokenizer, "chat_template", None) is not None
        closing = tokenizer.sep_token_id if encoder_kind == "bidirectional" else tokenizer.eos_token_id
        if closing is None:
            closing = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        self.closing_id = closing

    # -- formatting -------------------------------------------------------------------------------
    def _ids(self, text: str, special: bool) -> list[int]:
        return self.tokenizer(text, add_special_tokens=special)["input_ids"]

    def split_tokens(self, prompt: str | Sequence[Message], response: str) -> tuple[list[int], list[int]]:
        """Untruncated (prompt ids, response ids) per the module rule."""
        if self.encoder_kind == "decoder" and self.use_chat_template:
            messages = as_messages(prompt)
            head = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            full = self.tokenizer.apply_chat_template(
                messages + [{"role": "assistant", "content": response}], tokenize=False)
            if not full.startswith(head):
                raise ValueError("the chat template does not render the prompt as a prefix of the conversation")
            return self._ids(head, special=False), self._ids(full[len(head):], special=False)
        if self.encoder_kind == "decoder":
            prompt_ids = self._ids(prompt_text(prompt) + "\n\n", special=True)
        else:
            prompt_ids = self._ids(prompt_text(prompt), special=True)
        response_ids = self._ids(response, special=False)
        if self.closing_id is not None:
            response_ids = response_ids + [self.closing_id]
        return prompt_ids, response_ids

    # -- truncation -------------------------------------------------------------------------------
    def _lead(self, prompt_ids: list[int]) -> int:
        """Number of leading special tokens of the prompt to keep when cutting it from the left."""
        special = set(self.tokenizer.all_special_ids)
        return 1 if prompt_ids and prompt_ids[0] in special else 0

    def _cut_prompt(self, prompt_ids: list[int], budget: int) -> list[int]:
        lead = self._lead(prompt_ids)
        keep = max(budget - lead, MIN_PROMPT_TOKENS)
        return prompt_ids[:lead] + prompt_ids[len(prompt_ids) - keep:]

    def _cut_response(self, response_ids: list[int], budget: int) -> list[int]:
        budget = max(budget, 1)
        if self.closing_id is not None and response_ids and response_ids[-1] == self.closing_id:
            return response_ids[:budget - 1] + [self.closing_id]
        return response_ids[:budget]

    def truncate(self, prompt_ids: list[int], response_ids: list[int]) -> tuple[list[int], list[int], str]:
        """Apply the policy; returns (prompt ids, response ids, outcome) with outcome "" when it fit."""
        n = self.max_length
        if len(prompt_ids) + len(response_ids) <= n:
            return prompt_ids, response_ids, ""
        if self.truncation == "drop":
            return prompt_ids, response_ids, "dropped"
        min_prompt = self._lead(prompt_ids) + MIN_PROMPT_TOKENS
        cut = set()
        if self.truncation == "truncate_prompt_left":
            if len(response_ids) > n - min_prompt:
                response_ids = self._cut_response(response_ids, n - min_prompt)
                cut.add("response")
            if len(prompt_ids) + len(response_ids) > n:
                prompt_ids = self._cut_prompt(prompt_ids, n - len(response_ids))
                cut.add("prompt")
        else:
            min_response = min(len(response_ids), 2)
            if len(prompt_ids) > n - min_response:
                prompt_ids = self._cut_prompt(prompt_ids, n - min_response)
                cut.add("prompt")
            if len(prompt_ids) + len(response_ids) > n:
                response_ids = self._cut_response(response_ids, n - len(prompt_ids))
                cut.add("response")
        return prompt_ids, response_ids, "both" if len(cut) == 2 else cut.pop()

    def encode(self, prompt: str | Sequence[Message], response: str) -> EncodedSequence:
        prompt_ids, response_ids, outcome = self.truncate(*self.split_tokens(prompt, response))
        types = [0] * len(prompt_ids) + [1] * len(response_ids) if self.use_token_types else None
        return EncodedSequence(prompt_ids + response_ids, len(prompt_ids), types, outcome)


def pad_sequences(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists into (B, L) ids and attention mask."""
    width = max(len(s) for s in seqs)
    ids = torch.tensor([list(s) + [pad_id] * (width - len(s)) for s in seqs], dtype=torch.long)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], dtype=torch.long)
    return ids, mask
