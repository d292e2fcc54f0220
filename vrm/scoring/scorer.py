"""``RewardScorer``: load an exported reward model and score (prompt, response) pairs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoTokenizer

from vrm.data.tokenize import PairEncoder
from vrm.models.modeling_vrm import VRMForSequenceClassification
from vrm.scoring.base import Prompt, Scorer


def pad_sequences(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists into (B, L) ids and attention mask."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[i, :len(s)] = 1
    return ids, mask


class RewardScorer(Scorer):
    """Scores with a :class:`VRMForSequenceClassification` (VRM or BT head), tokenising as training did.

    Batched, longest-first so padding is small, in ``torch.inference_mode``.
    """

    name = "reward_model"

    def __init__(self, model: VRMForSequenceClassification, tokenizer, batch_size: int = 32,
                 device: str | torch.device = "cpu"):
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.device = torch.device(device)
        cfg = model.config
        self.encoder = PairEncoder(tokenizer, cfg.encoder_kind, cfg.max_sequence_length, cfg.truncation,
                                   cfg.use_token_types, cfg.use_chat_template)
        self.name = cfg.head

    @classmethod
    def from_pretrained(cls, path: str | Path, batch_size: int = 32, device: str = "cpu",
                        dtype: torch.dtype | None = None) -> RewardScorer:
        """Load an exported folder (safetensors weights only)."""
        model = VRMForSequenceClassification.from_pretrained(str(path), use_safetensors=True)
        if dtype is not None:
            model = model.to(dtype)
        return cls(model, AutoTokenizer.from_pretrained(str(path)), batch_size=batch_size, device=device)

    @torch.inference_mode()
    def score_details(self, prompts: Sequence[Prompt], responses: Sequence[str],
                      num_samples: int = 0) -> dict[str, list]:
        """Rewards, and for a VRM the per-objective scores, weights and (``num_samples`` > 0) reward std."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        encoded = [self.encoder.encode(p, r) for p, r in zip(prompts, responses)]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i].input_ids))
        results: dict[str, list] = {"reward": [None] * len(encoded)}
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            ids, mask = pad_sequences([encoded[i].input_ids for i in idx], self.tokenizer.pad_token_id or 0)
            types = None
            if self.encoder.use_token_types:
                types, _ = pad_sequences([encoded[i].token_type_ids for i in idx], 0)
                types = types.to(self.device)
            out = self.model(ids.to(self.device), mask.to(self.device), token_type_ids=types,
                             prompt_lengths=torch.tensor([encoded[i].prompt_length for i in idx], device=self.device),
                             return_details=True, num_samples=num_samples)
            fields = {"reward": out.logits[:, 0], "objective_scores": out.objective_scores,
                      "weights": out.weights, "reward_std": out.reward_std}
            for key, value in fields.items():
                if value is None:
                    continue
                column = results.setdefault(key, [None] * len(encoded))
                for i, v in zip(idx, value.float().cpu().tolist()):
                    column[i] = v
        return results

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str], *,
              question_types: Sequence[str] | None = None, references: Sequence[str] | None = None) -> list[float]:
        return self.score_details(prompts, responses)["reward"]
