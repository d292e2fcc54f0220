"""The white-box proxy reward (reverse reward engineering): interpretable features composed into a reward.

After Kim and Seo, "Rethinking the Role of Proxy Rewards in Language Model Alignment" (arXiv 2402.03469): length
incentive, repetition penalty and bi-encoder relevance, combined per question type by :class:`ProxyRewardScorer`,
and judged by :func:`monotonicity` against a gold reward.
"""

from vrm.proxy.features import (
    DEFAULT_TURN_MARKERS,
    length_incentive,
    repetition_penalty,
    tokenize,
    truncate_at_turn,
)
from vrm.proxy.monotonicity import MonotonicityResult, evaluate_policies, monotonicity
from vrm.proxy.relevance import CONTRIEVER, MINILM, BiEncoder, relevance, resolve_encoder
from vrm.proxy.reward import (
    CLOSED_ENDED_SCALE,
    MissingReferenceError,
    ProxyRewardParts,
    ProxyRewardScorer,
    ProxyScorerConfig,
)

__all__ = [
    "CLOSED_ENDED_SCALE",
    "CONTRIEVER",
    "DEFAULT_TURN_MARKERS",
    "MINILM",
    "BiEncoder",
    "MissingReferenceError",
    "MonotonicityResult",
    "ProxyRewardParts",
    "ProxyRewardScorer",
    "ProxyScorerConfig",
    "evaluate_policies",
    "length_incentive",
    "monotonicity",
    "relevance",
    "repetition_penalty",
    "resolve_encoder",
    "tokenize",
    "truncate_at_turn",
]
