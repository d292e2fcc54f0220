"""The exportable reward model: a transformers encoder, pooling, and a BT or VRM head.

This file imports only torch and transformers, so an export can carry it as remote code for tools
that never import ``vrm``. Everything here is deterministic inference; the variational training
objective (Pyro model and guide) lives in :mod:`vrm.models.vrm` and uses these modules.

Shapes: B = sequences, L = tokens, H = encoder hidden size, K = objectives, d = feature size.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from .heads import BT_HEADS, REWARD_SCALES, WEIGHT_POSTERIORS, BTHead, VRMHead
from .pooling import (
    POOLINGS,
    find_prompt_lengths,
    first_token_index,
    length_groups,
    pool,
    prefix_attention_mask,
    prompt_positions,
    prompt_token_mask,
    real_token_positions,
    segment_ids,
)

HEADS = ("vrm", "bt")
PROMPT_REPRS = ("separate", "shared", "prefix")
ENCODER_KINDS = ("bidirectional", "decoder")


class VRMConfig(PretrainedConfig):
    """Architecture of a reward model: the encoder's own config plus the head's hyperparameters."""

    model_type = "vrm"

    def __init__(
        self,
        encoder_config: dict | None = None,
        head: str = "vrm",
        encoder_kind: str = "bidirectional",
        pooling: str = "mean",
        prompt_repr: str = "separate",
        num_objectives: int = 8,
        feature_dim: int = 16,
        score_head: str = "linear",
        head_hidden_dim: int = 128,
        weight_posterior: str = "prompt",
        prompt_clusters: int = 6,
        prompt_groups: Sequence[str] | None = None,
        weight_prior: str = "fixed",
        prior_concentration: float = 1.0,
        concentration_eps: float = 1e-3,
        concentration_min: float = 1e-2,
        concentration_max: float = 1e3,
        use_weight_latent: bool = True,
        use_feature_latent: bool = True,
        reward_scale: str = "fixed",
        bt_head: str = "linear",
        bt_aspect_heads: int = 0,
        max_sequence_length: int = 512,
        truncation: str = "truncate_prompt_left",
        use_chat_template: bool = True,
        prompt_end_ids: Sequence[int] | None = None,
        length_chunks: int = 1,
        num_labels: int = 1,
        **kwargs,
    ):
        self.encoder_config = encoder_config or {}
        self.head = head
        self.encoder_kind = encoder_kind
        self.pooling = pooling
        self.prompt_repr = prompt_repr
        self.num_objectives = num_objectives
        self.feature_dim = feature_dim
        self.score_head = score_head
        self.head_hidden_dim = head_hidden_dim
        self.weight_posterior = weight_posterior
        self.prompt_clusters = prompt_clusters
        # weight_posterior='groups': the names of the prompt groups (the training data's subset labels), in the order
        # of the group classifier's outputs.
        self.prompt_groups = list(prompt_groups) if prompt_groups is not None else None
        self.weight_prior = weight_prior
        self.prior_concentration = prior_concentration
        self.concentration_eps = concentration_eps
        self.concentration_min = concentration_min
        self.concentration_max = concentration_max
        self.use_weight_latent = use_weight_latent
        self.use_feature_latent = use_feature_latent
        self.reward_scale = reward_scale
        self.bt_head = bt_head
        self.bt_aspect_heads = bt_aspect_heads
        # How (prompt, response) become ids (vrm.data.tokenize.PairEncoder), so scorers tokenise as training did.
        self.max_sequence_length = max_sequence_length
        self.truncation = truncation
        self.use_chat_template = use_chat_template
        # The input contract's boundary marker (vrm.data.contract): the prompt ends after its last occurrence before a
        # sequence's last token. None: exported before the contract (the caller then gives prompt_lengths).
        self.prompt_end_ids = list(prompt_end_ids) if prompt_end_ids is not None else None
        # Not architecture: how many length-sorted passes a padded batch is cut into (see length_groups).
        self.length_chunks = length_chunks
        super().__init__(num_labels=num_labels, **kwargs)
        self.validate_architecture()

    def validate_architecture(self) -> None:
        """Raise ValueError naming the first impossible setting."""
        checks = [
            (self.head in HEADS, "head", self.head, HEADS),
            (self.pooling in POOLINGS, "pooling", self.pooling, POOLINGS),
            (self.prompt_repr in PROMPT_REPRS, "prompt_repr", self.prompt_repr, PROMPT_REPRS),
            (self.encoder_kind in ENCODER_KINDS, "encoder_kind", self.encoder_kind, ENCODER_KINDS),
            (self.score_head in ("linear", "mlp"), "score_head", self.score_head, ("linear", "mlp")),
            (self.weight_posterior in WEIGHT_POSTERIORS, "weight_posterior", self.weight_posterior,
             WEIGHT_POSTERIORS),
            (self.weight_prior in ("fixed", "learned"), "weight_prior", self.weight_prior, ("fixed", "learned")),
            (self.reward_scale in REWARD_SCALES, "reward_scale", self.reward_scale, REWARD_SCALES),
            (self.bt_head in BT_HEADS, "bt_head", self.bt_head, BT_HEADS),
        ]
        for ok, key, value, allowed in checks:
            if not ok:
                raise ValueError(f"{key}={value!r} is not one of {allowed}")
        if self.num_objectives < 1 or self.feature_dim < 1:
            raise ValueError(
                f"num_objectives={self.num_objectives} and feature_dim={self.feature_dim} must be positive")
        if self.weight_posterior == "clusters" and self.prompt_clusters < 2:
            raise ValueError(f"prompt_clusters={self.prompt_clusters} must be at least 2 with weight_posterior='clusters'")
        if self.weight_posterior == "groups" and (
                self.prompt_groups is None or len(self.prompt_groups) < 2
                or not all(isinstance(g, str) for g in self.prompt_groups)
                or len(set(self.prompt_groups)) != len(self.prompt_groups)):
            raise ValueError(f"weight_posterior='groups' needs prompt_groups, at least 2 distinct group names (the "
                             f"training data's subset labels), got {self.prompt_groups!r}")
        if self.weight_posterior == "pair" and self.weight_prior != "learned":
            raise ValueError("weight_posterior='pair' needs weight_prior='learned': at scoring time the "
                             "responses' outcome is unknown, so the prompt-conditioned prior scores instead")
        if self.prompt_repr == "shared" and self.encoder_kind != "decoder":
            raise ValueError("prompt_repr='shared' reads h(x) at the last prompt token, which is only the "
                             "prompt's own representation in a decoder-only (causal) encoder")
        if self.prompt_repr == "prefix" and self.encoder_kind != "bidirectional":
            raise ValueError("prompt_repr='prefix' is a bidirectional encoder's attention mask; a decoder-only "
                             "encoder reads h(x) from the same pass with prompt_repr='shared'")
        if self.prompt_repr == "prefix" and self.pooling != "mean":
            raise ValueError(f"prompt_repr='prefix' needs pooling='mean', not {self.pooling!r}: the first token is a "
                             "prompt token, which the prefix mask keeps from seeing the response")
        if not isinstance(self.bt_aspect_heads, int) or self.bt_aspect_heads < 0:
            raise ValueError(f"bt_aspect_heads={self.bt_aspect_heads!r} must be an integer >= 0")
        if self.bt_aspect_heads and self.bt_head != "mlp":
            raise ValueError("bt_aspect_heads needs bt_head='mlp': the aspect heads and the reward share its hidden "
                             "layer (with a linear head they would share nothing)")
        if self.prior_concentration <= 0:
            raise ValueError(f"prior_concentration={self.prior_concentration} must be > 0")
        if self.prompt_end_ids is not None and (not self.prompt_end_ids
                                                or not all(isinstance(i, int) for i in self.prompt_end_ids)):
            raise ValueError(f"prompt_end_ids={self.prompt_end_ids!r} must be a non-empty list of token ids")
        if not isinstance(self.length_chunks, int) or self.length_chunks < 1:
            raise ValueError(f"length_chunks={self.length_chunks!r} must be an integer >= 1")

    @property
    def use_token_types(self) -> bool:
        """Whether the encoder has segment (token type) embeddings to mark prompt vs response."""
        return uses_token_types(self.encoder_config)

    @property
    def scores_from_prior(self) -> bool:
        """Whether E[w | x] at scoring time comes from the prior network (pair posterior)."""
        return self.weight_posterior == "pair"


def uses_token_types(encoder_config: dict) -> bool:
    """Whether an encoder (its config dict) has segment (token type) embeddings to mark prompt vs response."""
    return int(encoder_config.get("type_vocab_size", 0) or 0) > 1


@dataclass
class RewardModelOutput(SequenceClassifierOutput):
    """``logits`` (B, 1) is the deterministic reward; VRM extras are filled when asked for."""

    objective_scores: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    reward_std: torch.Tensor | None = None
    #: (S, B) rewards with w and z drawn from the posterior (``num_samples`` S > 0, VRM head); ``reward_std`` is their
    #: standard deviation over S (unbiased).
    reward_samples: torch.Tensor | None = None


def build_encoder(encoder_config: dict) -> PreTrainedModel:
    """A randomly initialised encoder from its config dict (weights come from the checkpoint)."""
    config_dict = dict(encoder_config)
    model_type = config_dict.pop("model_type", None)
    if model_type is None:
        raise ValueError("encoder_config has no 'model_type'")
    return AutoModel.from_config(AutoConfig.for_model(model_type, **config_dict))


class VRMForSequenceClassification(PreTrainedModel):
    """Reward model with the ``...ForSequenceClassification`` contract: ``logits`` of shape (B, 1).

    Inputs are full (prompt + response) sequences as the export's tokenizer renders them (its chat template, or
    ``text=prompt, text_pair=response``). The prompt/response boundary is found from the ids alone
    (:meth:`prompt_lengths`: the last ``config.prompt_end_ids`` marker); ``prompt_lengths`` (B,) overrides it
    (training passes the lengths it tokenised with, which the same rule gave). Token types, where the encoder has
    them, are derived from the boundary, so a caller's ``token_type_ids`` are not needed.
    """

    config_class = VRMConfig
    base_model_prefix = "encoder"
    supports_gradient_checkpointing = True
    _no_split_modules: list[str] = []

    def __init__(self, config: VRMConfig, encoder: PreTrainedModel | None = None):
        super().__init__(config)
        self.encoder = encoder if encoder is not None else build_encoder(config.encoder_config)
        hidden = self.encoder.config.hidden_size
        self.head = VRMHead(config, hidden) if config.head == "vrm" else \
            BTHead(hidden, config.bt_head, config.head_hidden_dim, config.bt_aspect_heads)
        # A peft (LoRA) wrapper's forward takes **kwargs and passes them on: ask the model it wraps.
        base = self.encoder.get_base_model() if hasattr(self.encoder, "get_base_model") else self.encoder
        self._takes_position_ids = "position_ids" in inspect.signature(base.forward).parameters
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """Keep PyTorch's default (fan-in scaled) init for the heads and the encoder's own weights.

        A 0.02-std init makes the VRM reward, a product of two small linear maps, start near 1e-4 and
        learn slowly; checkpoints overwrite every weight anyway.
        """

    @property
    def needs_prompt(self) -> bool:
        return self.config.head == "vrm"

    def _embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The encoder's token embeddings of ``input_ids`` (as its forward would look them up)."""
        return self.encoder.get_input_embeddings()(input_ids)

    def _hidden(self, input_ids, attention_mask, token_type_ids=None, prompt_lengths=None,
                inputs_embeds=None) -> torch.Tensor:
        """(B, L, H) last hidden states; with ``prompt_lengths``, under :func:`prefix_attention_mask`
        (prompt_repr=prefix). With ``config.length_chunks`` > 1 the rows go through the encoder in length-sorted
        groups (:func:`length_groups`), each trimmed to its longest row; padding positions then hold zeros.

        ``inputs_embeds`` (B, L, E): the token embeddings, when already looked up (``input_ids`` may then be None).
        Several passes share one lookup, so the backward pass builds the embedding matrix's (vocabulary-sized,
        dense) gradient once, not per pass.
        """
        groups = length_groups(attention_mask, self.config.length_chunks)
        if groups is None:
            return self._encode(input_ids, attention_mask, token_type_ids, prompt_lengths, inputs_embeds)
        if inputs_embeds is None:
            inputs_embeds = self._embed(input_ids)
        width = attention_mask.shape[1]
        parts, rows = [], []
        for index, cols in groups:
            embeds, mask, types = (None if t is None else t[index][:, cols]
                                   for t in (inputs_embeds, attention_mask, token_type_ids))
            hidden = self._encode(None, mask, types, None if prompt_lengths is None else prompt_lengths[index],
                                  embeds)
            parts.append(F.pad(hidden, (0, 0, cols.start, width - cols.stop)))
            rows.append(index)
        order = torch.cat(rows)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        return torch.cat(parts).index_select(0, inverse)

    def _encode(self, input_ids, attention_mask, token_type_ids=None, prompt_lengths=None,
                inputs_embeds=None) -> torch.Tensor:
        """One encoder pass (from ``input_ids``, or ``inputs_embeds`` when given): last hidden states; with
        ``prompt_lengths``, under the prefix mask."""
        kwargs = {"attention_mask": attention_mask}
        if inputs_embeds is not None:
            kwargs["inputs_embeds"] = inputs_embeds
        else:
            kwargs["input_ids"] = input_ids
        if token_type_ids is not None and self.config.use_token_types:
            kwargs["token_type_ids"] = token_type_ids
        if self._takes_position_ids:
            # Positions count real tokens only, so left and right padding give the same representation.
            kwargs["position_ids"] = real_token_positions(attention_mask).clamp(min=0)
        if prompt_lengths is not None:
            additive = getattr(self.encoder.config, "_attn_implementation", "eager") == "eager"
            kwargs["attention_mask"] = prefix_attention_mask(attention_mask, prompt_lengths,
                                                             self.encoder.get_input_embeddings().weight.dtype,
                                                             additive)
        return self.encoder(**kwargs).last_hidden_state

    def prompt_lengths(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       token_type_ids: torch.Tensor | None = None) -> torch.Tensor | None:
        """(B,) prompt lengths found from the ids by the input contract's marker (``config.prompt_end_ids``); None
        where nothing needs the boundary (a BT head without token types).

        A row without the marker (text that was not rendered by the export's chat template, e.g. a bare
        ``prompt + completion`` string) is scored as all prompt, with a warning. Models exported before the contract
        (no ``prompt_end_ids``) read the boundary from segment-1 token types when the encoder has them.
        """
        if not (self.needs_prompt or self.config.use_token_types):
            return None
        marker = self.config.prompt_end_ids
        if marker is None:
            if token_type_ids is None or not self.config.use_token_types:
                return None
            return ((token_type_ids == 0) & attention_mask.bool()).sum(dim=1)
        lengths = find_prompt_lengths(input_ids, attention_mask, marker)
        missing = lengths < 0
        if bool(missing.any()):
            warnings.warn(
                f"{int(missing.sum())} of {len(lengths)} sequences hold no prompt/response marker {list(marker)}: "
                "they are scored as all prompt, which is not the trained reward. Render (prompt, response) with the "
                "tokenizer's chat template (or pass text=prompt, text_pair=response), or use vrm.RewardScorer",
                stacklevel=3)
            lengths = torch.where(missing, attention_mask.sum(dim=1), lengths)
        return lengths

    def representations(self, input_ids, attention_mask, token_type_ids=None, prompt_lengths=None,
                        num_prompts: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Pooled h(x, y) for every row (N, H) and h(x) for the first ``num_prompts`` rows (M, H).

        Pairs put chosen rows first and rejected rows after, so h(x) is needed for the first half only.
        """
        num_prompts = input_ids.shape[0] if num_prompts is None else num_prompts
        if prompt_lengths is None:
            prompt_lengths = self.prompt_lengths(input_ids, attention_mask, token_type_ids)
        if self.config.use_token_types:
            # Segments follow the boundary (0 prompt, 1 response), whatever token types a caller's tokenizer made.
            token_type_ids = None if prompt_lengths is None else segment_ids(attention_mask, prompt_lengths)
        prefix = self.needs_prompt and prompt_lengths is not None and self.config.prompt_repr == "prefix"
        separate = self.needs_prompt and prompt_lengths is not None and self.config.prompt_repr == "separate"
        # The separate prompt pass reads its embeddings from the full rows' lookup (one embedding gradient).
        embeds = self._embed(input_ids) if separate else None
        hidden = self._hidden(input_ids, attention_mask, token_type_ids, prompt_lengths if prefix else None, embeds)
        h_xy = pool(hidden, attention_mask, self.config.pooling)
        if not self.needs_prompt:
            return h_xy, None
        if prompt_lengths is None:
            return h_xy, h_xy[:num_prompts]
        prompt_lengths = prompt_lengths[:num_prompts]
        if prefix:  # the prompt tokens' states are the prompt's own: pool them
            prompt = prompt_token_mask(attention_mask[:num_prompts], prompt_lengths)
            return h_xy, pool(hidden[:num_prompts], prompt.to(attention_mask.dtype), self.config.pooling)
        if self.config.prompt_repr == "shared":
            rows = torch.arange(num_prompts, device=hidden.device)
            end = first_token_index(attention_mask[:num_prompts]) + prompt_lengths - 1
            return h_xy, hidden[rows, end]
        # The prompts alone, right-padded (as prompt_slice cuts them), embedded from the full rows' lookup.
        positions, mask = prompt_positions(attention_mask[:num_prompts], prompt_lengths)
        types = None if token_type_ids is None else token_type_ids[:num_prompts].gather(1, positions) * mask
        prompt_embeds = embeds[:num_prompts].gather(1, positions.unsqueeze(-1).expand(-1, -1, embeds.shape[-1]))
        prompt_mode = "last" if self.config.encoder_kind == "decoder" else self.config.pooling
        return h_xy, pool(self._hidden(None, mask, types, inputs_embeds=prompt_embeds), mask, prompt_mode)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, prompt_lengths: torch.Tensor | None = None,
                return_details: bool = False, num_samples: int = 0, return_dict: bool | None = None,
                **unused) -> RewardModelOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        h_xy, h_x = self.representations(input_ids, attention_mask, token_type_ids, prompt_lengths)
        out = self.head(h_xy, h_x)
        reward_std = samples = None
        if num_samples > 0 and self.config.head == "vrm":
            samples = self.head.sample_rewards(h_xy, h_x, num_samples)  # (S, B)
            reward_std = samples.std(dim=0)
        return RewardModelOutput(
            logits=out.reward.unsqueeze(-1),
            objective_scores=out.objective_scores if return_details else None,
            weights=out.weights if return_details else None,
            reward_std=reward_std,
            reward_samples=samples if return_details else None,
        )
