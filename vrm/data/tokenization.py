"""How (prompt, response) pairs become ids: the settings every stage shares, and what caches of ids are keyed by.

:class:`TokenizationSettings` are the arguments of :class:`~vrm.data.tokenize.PairEncoder`: the data module
tokenises with them, a model config records them (so a scorer tokenises as training did), and the caches of
tokenised splits and of frozen-encoder features are keyed by them and by :func:`tokenizer_fingerprint`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from transformers import PretrainedConfig, PreTrainedTokenizerBase

from vrm.data.contract import InputContract
from vrm.data.tokenize import PairEncoder

#: ``model_type`` of :class:`vrm.models.modeling_vrm.VRMConfig`, whose own fields hold the settings.
VRM_MODEL_TYPE = "vrm"
#: Config key of a plain (non-VRM) export that records how (prompt, response) became ids.
PLAIN_TOKENIZATION_KEY = "vrm_tokenization"


@dataclass(frozen=True)
class TokenizationSettings:
    """How a model's training turned (prompt, response) into ids: the arguments of :class:`PairEncoder` and the
    input contract's marker (``prompt_end_ids``, None for a model exported before the contract)."""

    encoder_kind: str
    max_sequence_length: int
    truncation: str
    use_token_types: bool
    use_chat_template: bool
    prompt_end_ids: tuple[int, ...] | None = None

    @classmethod
    def from_config(cls, config: PretrainedConfig) -> TokenizationSettings:
        """The settings a model config records: a VRMConfig's own fields, or a plain export's ``vrm_tokenization``."""
        if getattr(config, "model_type", None) == VRM_MODEL_TYPE:
            marker = None if config.prompt_end_ids is None else tuple(config.prompt_end_ids)
            return cls(config.encoder_kind, config.max_sequence_length, config.truncation, config.use_token_types,
                       config.use_chat_template, marker)
        recorded = getattr(config, PLAIN_TOKENIZATION_KEY, None)
        if not isinstance(recorded, dict):
            raise ValueError(f"a {type(config).__name__} without '{PLAIN_TOKENIZATION_KEY}' is not a vrm export: "
                             "its tokenisation rule is unknown")
        recorded = dict(recorded)
        if recorded.get("prompt_end_ids") is not None:
            recorded["prompt_end_ids"] = tuple(recorded["prompt_end_ids"])
        return cls(**recorded)

    def to_dict(self) -> dict:
        values = asdict(self)
        values["prompt_end_ids"] = None if self.prompt_end_ids is None else list(self.prompt_end_ids)
        return values

    def pair_encoder(self, tokenizer: PreTrainedTokenizerBase, truncation: str | None = None,
                     contract: InputContract | None = None) -> PairEncoder:
        """The encoder of (prompt, response) pairs these settings describe (``truncation`` overrides theirs)."""
        return PairEncoder(tokenizer, self.encoder_kind, self.max_sequence_length, truncation or self.truncation,
                           self.use_token_types, self.use_chat_template, contract=contract)


def cache_dir() -> Path:
    """Where tokenised splits are cached (``VRM_CACHE`` or ``~/.cache/vrm``); ValueError naming ``VRM_CACHE`` when
    it cannot be a folder of ours (it, or the nearest existing folder above it, is a file or not writable)."""
    root = Path(os.environ.get("VRM_CACHE", Path.home() / ".cache" / "vrm"))
    existing = next((p for p in (root, *root.parents) if p.exists()), None)
    if existing is not None and (not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK)):
        why = "is a file, not a folder" if not existing.is_dir() else "is a folder this user cannot write"
        raise ValueError(f"VRM_CACHE={root}: {existing} {why}; point VRM_CACHE at a writable folder (created if "
                         "missing)")
    return root / "tokenized"


#: Attribute under which a tokenizer object keeps its fingerprint (with what would change it after loading).
FINGERPRINT_ATTR = "_vrm_fingerprint"


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A hash of what decides the token ids: vocabulary, special tokens and chat template (computed once per
    tokenizer object: hashing a 30k vocabulary takes some 40 ms, a sweep trial about a second)."""
    state = (len(tokenizer), tuple(tokenizer.all_special_tokens), str(getattr(tokenizer, "chat_template", None)))
    known = getattr(tokenizer, FINGERPRINT_ATTR, None)
    if known is not None and known[0] == state:
        return known[1]
    h = hashlib.sha256()
    h.update(repr(sorted(tokenizer.get_vocab().items())).encode())
    h.update(repr(tokenizer.all_special_tokens).encode())
    h.update(str(getattr(tokenizer, "chat_template", None)).encode())
    h.update(type(tokenizer).__name__.encode())
    fingerprint = h.hexdigest()[:16]
    setattr(tokenizer, FINGERPRINT_ATTR, (state, fingerprint))
    return fingerprint
