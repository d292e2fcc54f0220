"""A pair's reward does not depend on what else is in its batch: the same alone, batched with much longer texts, and
under left and right padding (up to 1e-5), for VRM and BT exports on a bidirectional and on decoder-only encoders,
through ``RewardScorer`` and through the model a client loads (``AutoModelForSequenceClassification``)."""

from __future__ import annotations

import pytest
import torch
from conftest import random_export
from transformers import AutoModelForSequenceClassification

from vrm.models.modeling_vrm import VRMForSequenceClassification
from vrm.scoring.scorer import RewardScorer

ATOL = 1e-5
SHORT = [("Name a fruit.", "An apple."), ("What is 2 + 2?", "4.")]
#: Texts several times longer than the short pairs (about 200 and 120 tokens).
LONG = [("Tell me about the sea. " * 12, "The sea is large and deep and full of fish. " * 10),
        ("Explain recursion in detail, please. " * 8, "A function that calls itself. " * 8)]
#: (encoder, head, plain export, overrides): VRM and BT on a bidirectional and three decoder-only encoders, BT exported
#: as the decoder architecture's own ...ForSequenceClassification (--plain), and a VRM whose encoder runs a batch in
#: length-sorted passes (MiniLM's setting) with the prompt encoded in the same pass (prompt_repr=prefix).
CASES = [(encoder, head, False, ()) for encoder in ("tiny_bert", "tiny_gpt2", "tiny_qwen2", "tiny_llama")
         for head in ("vrm", "bt")] + [(encoder, "bt", True, ()) for encoder in ("tiny_gpt2", "tiny_qwen2", "tiny_llama")]
CASES.append(("tiny_bert", "vrm", False, ("encoder.length_chunks=3", "model.prompt_repr=prefix")))
#: A VRM whose weights read the prompt's predicted group (the default on data with subsets), on BERT and on Llama.
GROUPS = ("model.weight_posterior=groups",)
CASES += [(encoder, "vrm", False, GROUPS) for encoder in ("tiny_bert", "tiny_llama")]


def case_id(case) -> str:
    extra = "-groups" if case[3] == GROUPS else "-chunks-prefix" if case[3] else ""
    return f"{case[0]}-{case[1]}{'-plain' if case[2] else ''}{extra}"


@pytest.fixture(scope="module", params=CASES, ids=case_id)
def export(request, tmp_path_factory):
    encoder, head, plain, overrides = request.param
    root = tmp_path_factory.mktemp(case_id(request.param))
    return random_export(root, [f"model={head}", f"encoder={encoder}", "data.max_length=512", *overrides], plain=plain,
                         prompt_groups=["coding", "health", "risky"] if overrides == GROUPS else None)


def test_a_reward_is_the_same_alone_and_batched_with_longer_texts(export):
    scorer = RewardScorer.from_pretrained(export, batch_size=8)
    alone = [scorer.score([p], [r])[0] for p, r in SHORT]
    mixed = [LONG[0], SHORT[0], LONG[1], SHORT[1]]
    batched = scorer.score([p for p, _ in mixed], [r for _, r in mixed])
    assert max(len(scorer.encode_pair(p, r).input_ids) for p, r in LONG) > 5 * max(
        len(scorer.encode_pair(p, r).input_ids) for p, r in SHORT)
    assert [batched[1], batched[3]] == pytest.approx(alone, abs=ATOL)
    assert [batched[0], batched[2]] == pytest.approx([scorer.score([p], [r])[0] for p, r in LONG], abs=ATOL)


def pad(seqs: list[list[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, s in enumerate(seqs):
        cols = slice(width - len(s), width) if side == "left" else slice(0, len(s))
        ids[i, cols], mask[i, cols] = torch.tensor(s), 1
    return ids, mask


@pytest.mark.parametrize("side", ["left", "right"])
@torch.inference_mode()
def test_the_loaded_model_gives_the_same_reward_under_left_and_right_padding(export, side):
    """What a client does: load the folder with the Auto class, tokenise, pad, call. Its padding side may be either
    (TRL and OpenRLHF pad left for generation), so the reward must not depend on it. Our model class counts
    positions over the real tokens itself; a plain export is transformers' own class, which numbers positions from
    the first column, so a left-padding client passes position ids from the mask, as OpenRLHF's reward model and
    ``generate`` do (GPT-2's absolute positions need them; the rotary Qwen2 and Llama give the same reward either
    way)."""
    scorer = RewardScorer.from_pretrained(export)
    model = AutoModelForSequenceClassification.from_pretrained(str(export)).eval()
    seqs = [scorer.encode_pair(p, r).input_ids for p, r in [LONG[0], SHORT[0], LONG[1], SHORT[1]]]
    alone = torch.cat([model(input_ids=torch.tensor([s])).logits[:, 0] for s in seqs])
    ids, mask = pad(seqs, scorer.pad_id, side)
    positions = {}
    if side == "left" and not isinstance(model, VRMForSequenceClassification):
        positions["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
    batched = model(input_ids=ids, attention_mask=mask, **positions).logits[:, 0]
    torch.testing.assert_close(batched, alone, atol=ATOL, rtol=0)
