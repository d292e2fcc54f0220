"""Turn (prompt, response) into token ids: one rule, used by training, scoring and export.

The rule is the input contract (:mod:`vrm.data.contract`): the conversation (the prompt's messages, then the
response as an assistant message) is rendered by the contract's chat template and tokenised without adding special
tokens; ``prompt_length`` is where the contract's marker ends the prompt, found in the ids by the same function the
model uses (:func:`vrm.models.modeling_vrm.find_prompt_lengths`). Token types, where the encoder has them, are 0 for
the prompt and 1 for the response. For a BERT-like tokenizer this is ``[CLS] prompt [SEP] response [SEP]``, the
prompt prefix being exactly the prompt encoded on its own.

Pairs longer than ``max_length`` are handled by an explicit policy, counted and reported:
``truncate_prompt_left`` (drop prompt tokens from the left, after any leading special token, keeping the marker
that ends it; if the response alone is still too long it is cut too), ``truncate_response`` (cut the response's
tail, keeping its closing token; then the prompt's left if still needed) or ``drop``. Truncation keeps the marker,
so the model finds the same boundary in the truncated ids.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jinja2 import TemplateError
from transformers import PreTrainedTokenizerBase

from vrm.data.contract import ContractError, InputContract, build_contract, prompt_end
from vrm.data.schema import Message, as_messages

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
    """Tokenises (prompt, response) by the input contract with a truncation policy.

    ``contract``: the rule of a trained model (an export's chat template and marker); by default it is built from
    ``tokenizer`` as training loaded it (:func:`vrm.data.contract.build_contract`).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, encoder_kind: str, max_length: int,
                 truncation: str = "truncate_prompt_left", use_token_types: bool = False,
                 use_chat_template: bool = True, contract: InputContract | None = None):
        if truncation not in TRUNCATION_POLICIES:
            raise ValueError(f"truncation={truncation!r} is not one of {TRUNCATION_POLICIES}")
        if max_length < 4:
            raise ValueError(f"max_length={max_length} is too small for a prompt and a response")
        self.tokenizer = tokenizer
        self.encoder_kind = encoder_kind
        self.max_length = max_length
        self.truncation = truncation
        self.use_token_types = use_token_types
        self.contract = contract if contract is not None else build_contract(tokenizer, encoder_kind,
                                                                             use_chat_template)
        self._special_ids = set(tokenizer.all_special_ids)

    # -- formatting -------------------------------------------------------------------------------
    def render(self, prompt: str | Sequence[Message], response: str) -> str:
        """The conversation's text as the contract's chat template writes it."""
        messages = as_messages(prompt) + [{"role": "assistant", "content": response}]
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                      chat_template=self.contract.chat_template)
        except TemplateError as err:  # the template's own raise_exception(), an undefined name, ...
            raise ContractError(f"the chat template (chat_template.jinja) failed to render: {err}") from None

    def split_ids(self, ids: list[int]) -> tuple[list[int], list[int]]:
        """(prompt ids, response ids) of a rendered sequence, cut where the model finds the boundary."""
        length = prompt_end(ids, self.contract.prompt_end_ids)
        if length is None:
            raise ContractError(f"no prompt/response marker {list(self.contract.prompt_end_ids)} in the rendered "
                                f"ids {ids[:12]}...: the response likely holds the marker's text")
        return ids[:length], ids[length:]

    def split_tokens(self, prompt: str | Sequence[Message], response: str) -> tuple[list[int], list[int]]:
        """Untruncated (prompt ids, response ids): the rendered conversation tokenised, cut at the marker."""
        ids = self.tokenizer(self.render(prompt, response), add_special_tokens=False)["input_ids"]
        return self.split_ids(ids)

    # -- truncation -------------------------------------------------------------------------------
    def _lead(self, prompt_ids: list[int]) -> int:
        """Number of leading special tokens of the prompt to keep when cutting it from the left."""
        return 1 if prompt_ids and prompt_ids[0] in self._special_ids else 0

    def _min_prompt_tail(self) -> int:
        """Fewest prompt tokens kept after the lead: the marker that ends the prompt, and at least one token."""
        return max(MIN_PROMPT_TOKENS, len(self.contract.prompt_end_ids))

    def _cut_prompt(self, prompt_ids: list[int], budget: int) -> list[int]:
        lead = self._lead(prompt_ids)
        keep = max(budget - lead, self._min_prompt_tail())
        return prompt_ids[:lead] + prompt_ids[len(prompt_ids) - keep:]

    def _cut_response(self, response_ids: list[int], budget: int) -> list[int]:
        """The response's head, keeping its closing special token (e.g. [SEP], where a decoder reads the reward)."""
        budget = max(budget, 1)
        if response_ids and response_ids[-1] in self._special_ids:
            return response_ids[:budget - 1] + [response_ids[-1]]
        return response_ids[:budget]

    def truncate(self, prompt_ids: list[int], response_ids: list[int]) -> tuple[list[int], list[int], str]:
        """Apply the policy; returns (prompt ids, response ids, outcome) with outcome "" when it fit."""
        n = self.max_length
        if len(prompt_ids) + len(response_ids) <= n:
            return prompt_ids, response_ids, ""
        if self.truncation == "drop":
            return prompt_ids, response_ids, "dropped"
        min_prompt = self._lead(prompt_ids) + self._min_prompt_tail()
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
        return self.encode_split(*self.split_tokens(prompt, response))

    def encode_rendered(self, ids: list[int]) -> EncodedSequence:
        """Encode ids a client rendered with the contract's template itself (split at the marker, truncated)."""
        return self.encode_split(*self.split_ids(ids))

    def encode_split(self, prompt_ids: list[int], response_ids: list[int]) -> EncodedSequence:
        prompt_ids, response_ids, outcome = self.truncate(prompt_ids, response_ids)
        types = [0] * len(prompt_ids) + [1] * len(response_ids) if self.use_token_types else None
        return EncodedSequence(prompt_ids + response_ids, len(prompt_ids), types, outcome)


def pad_sequences(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists into (B, L) ids and attention mask."""
    width = max(len(s) for s in seqs)
    ids = torch.tensor([list(s) + [pad_id] * (width - len(s)) for s in seqs], dtype=torch.long)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], dtype=torch.long)
    return ids, mask
