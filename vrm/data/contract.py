"""The input contract: how a conversation becomes the token ids a reward model is trained and scored on.

One rule, written once and shipped inside every export, so that every client (``vrm-score``, TRL, RewardBench,
OpenRLHF, a transformers pipeline) computes the trained reward:

1. A conversation whose last message is the assistant response is rendered to text by the contract's **chat
   template**, and the text is tokenised without adding special tokens (the template writes them).
2. The prompt ends after the last occurrence of the **marker** (``prompt_end_ids``) that comes before the
   sequence's last token (:func:`vrm.models.pooling.find_prompt_lengths`). The model finds it from the ids
   alone, so it needs no token types and no separate prompt argument.

The template is the tokenizer's own for a decoder-only encoder that has one (the marker is then its generation
prompt up to its last special token, e.g. ``<|im_start|>`` of ``<|im_start|>assistant\\n``). Otherwise it is the **plain** template: the tokenizer's leading special
token, the prompt as plain text (:func:`vrm.data.schema.prompt_text`: a single user message's content, else
``role: content`` lines), a separator, the response, the separator again: ``[CLS] prompt [SEP] response [SEP]`` for
BERT-like tokenizers (the marker and closing token are the separator: ``[SEP]``, or the end-of-sequence token of a
decoder tokenizer).

Models trained before the contract used the plain layout for BERT-like tokenizers too (the prompt encoded with its
special tokens, then the response and the separator), so their checkpoints and exports carry on under it
(:func:`reproduces_legacy_rule`); the old decoder rules (a blank line after the prompt, or prompt and response
tokenised apart) cannot be carried and are refused with a message.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tokenizers import processors
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from vrm.models.pooling import find_prompt_lengths

#: tokenizer_config.json key of a tokenizer that carries the contract: its marker ids.
CONTRACT_KEY = "vrm_prompt_end_ids"
#: Probe conversation used to read a chat template's generation prompt.
_PROBE = [{"role": "user", "content": "x"}]


class ContractError(ValueError):
    """A tokenizer cannot carry the input contract, or a model was trained under another rule."""


@dataclass(frozen=True)
class InputContract:
    """The chat template that renders a conversation and the marker ids that end its prompt."""

    chat_template: str
    prompt_end_ids: tuple[int, ...]

    def fingerprint(self) -> str:
        """A short hash of everything that decides the ids (for cache keys)."""
        return hashlib.sha256(f"{self.chat_template}|{self.prompt_end_ids}".encode()).hexdigest()[:16]


def _jinja_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def plain_chat_template(lead: str, separator: str) -> str:
    """``lead prompt_text separator response separator``; a conversation ending with a user message renders as
    ``lead prompt_text`` (plus the separator with ``add_generation_prompt``)."""
    lead, separator = _jinja_string(lead), _jinja_string(separator)
    return (
        "{%- if messages[-1]['role'] == 'assistant' -%}{%- set turns = messages[:-1] -%}"
        "{%- else -%}{%- set turns = messages -%}{%- endif -%}"
        "{{- " + lead + " -}}"
        "{%- if turns | length == 1 and turns[0]['role'] == 'user' -%}{{- turns[0]['content'] -}}"
        "{%- else -%}{%- for m in turns -%}{%- if not loop.first -%}{{- '\\n' -}}{%- endif -%}"
        "{{- m['role'] + ': ' + m['content'] -}}{%- endfor -%}{%- endif -%}"
        "{%- if messages[-1]['role'] == 'assistant' -%}"
        "{{- " + separator + " + messages[-1]['content'] + " + separator + " -}}"
        "{%- elif add_generation_prompt -%}{{- " + separator + " -}}{%- endif -%}"
    )


def _single_text_specials(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The special ids the tokenizer puts before and after a single text (e.g. [CLS] and [SEP])."""
    bare = tokenizer("x", add_special_tokens=False)["input_ids"]
    full = tokenizer("x")["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start:start + len(bare)] == bare:
            return full[:start], full[start + len(bare):]
    return [], []


def separator_token(tokenizer: PreTrainedTokenizerBase, encoder_kind: str) -> str:
    """The plain template's separator: a bidirectional encoder's [SEP], a decoder's end-of-sequence token."""
    order = ("sep_token", "eos_token") if encoder_kind == "bidirectional" else ("eos_token", "sep_token")
    for name in order:
        token = getattr(tokenizer, name, None)
        if token:
            return token
    raise ContractError(f"the tokenizer ({type(tokenizer).__name__}) has neither a sep nor an eos token to end the "
                        "prompt and the response with")


def generation_prompt(tokenizer: PreTrainedTokenizerBase, template: str) -> str:
    """What ``add_generation_prompt=True`` appends after a user turn (e.g. ``<|im_start|>assistant\\n``)."""
    without = tokenizer.apply_chat_template(_PROBE, tokenize=False, chat_template=template)
    with_prompt = tokenizer.apply_chat_template(_PROBE, tokenize=False, add_generation_prompt=True,
                                                chat_template=template)
    if not with_prompt.startswith(without) or with_prompt == without:
        raise ContractError("the chat template has no generation prompt to end the prompt with (rendering a user "
                            "turn with add_generation_prompt=True adds nothing after it)")
    return with_prompt[len(without):]


def through_last_special(marker: Sequence[int], special_ids: Sequence[int]) -> list[int]:
    """The marker up to and including its last special token (the whole marker when it has none).

    Text after a special token can merge with the response's first characters (``assistant\\n`` + ``\\nHi`` gives
    ``\\n\\n``), which would hide the marker; a special token is never merged, so the boundary always shows.
    """
    special = set(special_ids)
    ends = [i for i, token in enumerate(marker) if token in special]
    return list(marker[:ends[-1] + 1]) if ends else list(marker)


def own_template(tokenizer: PreTrainedTokenizerBase, encoder_kind: str, use_chat_template: bool) -> str | None:
    """The tokenizer's own chat template when the contract uses it (decoder-only encoders), else None."""
    own = getattr(tokenizer, "chat_template", None)
    return own if encoder_kind == "decoder" and use_chat_template and isinstance(own, str) and own else None


def build_contract(tokenizer: PreTrainedTokenizerBase, encoder_kind: str, use_chat_template: bool = True
                   ) -> InputContract:
    """The contract of a tokenizer as training loaded it, or the one an exported tokenizer carries."""
    carried = carried_contract(tokenizer)
    if carried is not None:
        return carried
    own = own_template(tokenizer, encoder_kind, use_chat_template)
    if own is not None:
        marker = tokenizer(generation_prompt(tokenizer, own), add_special_tokens=False)["input_ids"]
        return InputContract(own, tuple(through_last_special(marker, tokenizer.all_special_ids)))
    lead, separator = plain_tokens(tokenizer, encoder_kind)
    marker = tuple(tokenizer(separator, add_special_tokens=False)["input_ids"])
    if len(marker) != 1:
        raise ContractError(f"the separator {separator!r} is not one token ({list(marker)})")
    return InputContract(plain_chat_template(lead, separator), marker)


def plain_tokens(tokenizer: PreTrainedTokenizerBase, encoder_kind: str) -> tuple[str, str]:
    """The plain template's leading special token ("" when the tokenizer puts none before a text) and separator."""
    lead_ids, _ = _single_text_specials(tokenizer)
    lead = tokenizer.convert_ids_to_tokens(lead_ids[0]) if lead_ids else ""
    return lead, separator_token(tokenizer, encoder_kind)


def reproduces_legacy_rule(tokenizer: PreTrainedTokenizerBase, encoder_kind: str, use_chat_template: bool) -> bool:
    """Whether the pre-contract rule gave the contract's ids: the prompt encoded with the tokenizer's own special
    tokens, which must be exactly ``lead prompt separator``, then the response and the separator (BERT-like
    tokenizers, either encoder kind). The old decoder rules (a blank line after the prompt; a chat template's
    prompt and response tokenised apart) differ."""
    if own_template(tokenizer, encoder_kind, use_chat_template) is not None:
        return False
    lead_ids, tail_ids = _single_text_specials(tokenizer)
    separator = separator_token(tokenizer, encoder_kind)
    return len(lead_ids) <= 1 and tail_ids == [tokenizer.convert_tokens_to_ids(separator)]


def prompt_end(ids: Sequence[int], marker: Sequence[int]) -> int | None:
    """The prompt length of one id sequence by the contract's rule (None without a marker)."""
    tensor = torch.tensor([list(ids)], dtype=torch.long)
    length = int(find_prompt_lengths(tensor, torch.ones_like(tensor), marker)[0])
    return None if length < 0 else length


def contract_tokenizer(tokenizer: PreTrainedTokenizerBase, contract: InputContract, encoder_kind: str) -> PreTrainedTokenizerFast:
    """A copy of the tokenizer that carries the input contract: its chat template, an eos token, no special tokens
    added to a single text (the template writes them, so ``tokenizer(rendered)`` equals ``apply_chat_template``), the
    plain layout for a text pair (``lead prompt sep response sep``, where the template is the plain one) and no
    ``token_type_ids`` (the model derives them). Saved as the generic fast tokenizer class, whose post-processor
    is read from ``tokenizer.json`` (BERT's own class would rebuild it on load)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ContractError(f"{type(tokenizer).__name__} has no fast (tokenizers) backend to write the input contract "
                          "into")
    backend = copy.deepcopy(backend)
    backend.no_truncation()
    backend.no_padding()
    own = own_template(tokenizer, encoder_kind, True) == contract.chat_template
    if own:
        eos = tokenizer.eos_token or tokenizer.sep_token
        backend.post_processor = processors.TemplateProcessing(single="$A:0", pair="$A:0 $B:1")
    else:
        lead, eos = plain_tokens(tokenizer, encoder_kind)
        specials = [t for t in (lead, eos) if t]
        pair = " ".join(([f"{lead}:0"] if lead else []) + ["$A:0", f"{eos}:0", "$B:1", f"{eos}:1"])
        backend.post_processor = processors.TemplateProcessing(
            single="$A:0", pair=pair, special_tokens=[(t, tokenizer.convert_tokens_to_ids(t)) for t in specials])
    if not eos:
        raise ContractError(f"{type(tokenizer).__name__} has no eos (or sep) token to close a response with")
    specials = {**tokenizer.special_tokens_map, "eos_token": eos}
    carrier = PreTrainedTokenizerFast(
        tokenizer_object=backend, **specials, chat_template=contract.chat_template,
        model_input_names=[n for n in tokenizer.model_input_names if n != "token_type_ids"],
        padding_side=tokenizer.padding_side, model_max_length=tokenizer.model_max_length)
    carrier.init_kwargs[CONTRACT_KEY] = list(contract.prompt_end_ids)  # saved in tokenizer_config.json
    return carrier


def carried_contract(tokenizer: PreTrainedTokenizerBase) -> InputContract | None:
    """The contract a tokenizer made by :func:`contract_tokenizer` carries (None for any other tokenizer)."""
    marker = tokenizer.init_kwargs.get(CONTRACT_KEY)
    template = getattr(tokenizer, "chat_template", None)
    if marker is None or not isinstance(template, str):
        return None
    return InputContract(template, tuple(int(i) for i in marker))


def lays_out_pairs(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether ``tokenizer(text=prompt, text_pair=response)`` adds the plain template's special tokens (a contract
    tokenizer does for the plain template, not for a model's own chat template)."""
    def size(*texts: str) -> int:
        return len(tokenizer(*texts)["input_ids"])

    return size("a", "b") > size("a") + size("b")
