"""Pooling picks the right token under left and right padding, for decoder-only and bidirectional encoders."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel, LlamaConfig, LlamaModel

from vrm.models.modeling_vrm import (
    VRMConfig,
    VRMForSequenceClassification,
    first_token_index,
    last_token_index,
    pool,
    prompt_slice,
)

RIGHT = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
LEFT = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])


def hidden_of_positions() -> torch.Tensor:
    """(2, 5, 1) hidden states whose value is the token position, so the pooled value names the token."""
    return torch.arange(5.0).expand(2, 5).unsqueeze(-1).clone()


def test_token_indices_by_hand():
    assert last_token_index(RIGHT).tolist() == [2, 4]
    assert last_token_index(LEFT).tolist() == [4, 4]
    assert first_token_index(RIGHT).tolist() == [0, 0]
    assert first_token_index(LEFT).tolist() == [2, 0]


@pytest.mark.parametrize("mask, last, cls, mean", [
    (RIGHT, [2, 4], [0, 0], [1.0, 2.0]),  # mean of positions 0..2 is 1; of 0..4 is 2
    (LEFT, [4, 4], [2, 0], [3.0, 2.0]),  # mean of positions 2..4 is 3
])
def test_pool_modes(mask, last, cls, mean):
    h = hidden_of_positions()
    assert pool(h, mask, "last")[:, 0].tolist() == last
    assert pool(h, mask, "cls")[:, 0].tolist() == cls
    assert pool(h, mask, "mean")[:, 0].tolist() == mean
    with pytest.raises(ValueError, match="pooling"):
        pool(h, mask, "max")


def test_prompt_slice_under_both_paddings():
    ids = torch.tensor([[5, 6, 7, 8, 0], [0, 5, 6, 7, 8]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [0, 1, 1, 1, 1]])
    p_ids, p_mask, _ = prompt_slice(ids, mask, torch.tensor([2, 3]))
    assert p_ids.tolist() == [[5, 6, 0], [5, 6, 7]]
    assert p_mask.tolist() == [[1, 1, 0], [1, 1, 1]]


def tiny_model(kind: str, head: str = "vrm") -> VRMForSequenceClassification:
    torch.manual_seed(0)
    if kind == "decoder":
        enc = LlamaModel(LlamaConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     num_key_value_heads=2, intermediate_size=32))
        cfg = VRMConfig(encoder_config=enc.config.to_dict(), head=head, encoder_kind="decoder", pooling="last",
                        prompt_repr="shared", num_objectives=3, feature_dim=4)
    else:
        enc = BertModel(BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=32))
        cfg = VRMConfig(encoder_config=enc.config.to_dict(), head=head, encoder_kind="bidirectional",
                        pooling="mean", prompt_repr="separate", num_objectives=3, feature_dim=4)
    return VRMForSequenceClassification(cfg, encoder=enc).eval()


def pad(seqs, side):
    width = max(map(len, seqs))
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(width - len(s), width) if side == "left" else slice(0, len(s))
        ids[i, sl], mask[i, sl] = torch.tensor(s), 1
    return ids, mask


@pytest.mark.parametrize("kind", ["decoder", "bidirectional"])
def test_padding_side_does_not_change_representations(kind):
    model = tiny_model(kind)
    seqs = [[3, 4, 5, 6], [7, 8, 9, 10, 11, 12, 13], [14, 15, 16]]
    prompt_lengths = torch.tensor([2, 3, 2])
    with torch.no_grad():
        alone = [model.representations(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long),
                                       prompt_lengths=prompt_lengths[i:i + 1]) for i, s in enumerate(seqs)]
        for side in ("left", "right"):
            ids, mask = pad(seqs, side)
            h_xy, h_x = model.representations(ids, mask, prompt_lengths=prompt_lengths)
            for i, (a_xy, a_x) in enumerate(alone):
                torch.testing.assert_close(h_xy[i], a_xy[0], atol=1e-5, rtol=1e-4, msg=f"{side} h_xy row {i}")
                torch.testing.assert_close(h_x[i], a_x[0], atol=1e-5, rtol=1e-4, msg=f"{side} h_x row {i}")


def test_decoder_shared_prompt_reads_last_prompt_token():
    """In a causal encoder, the hidden state at the last prompt token is the prompt's own representation."""
    model = tiny_model("decoder")
    with torch.no_grad():
        _, h_x = model.representations(torch.tensor([[3, 4, 5, 6, 7]]), torch.ones(1, 5, dtype=torch.long),
                                       prompt_lengths=torch.tensor([3]))
        prompt_alone, _ = model.representations(torch.tensor([[3, 4, 5]]), torch.ones(1, 3, dtype=torch.long))
    torch.testing.assert_close(h_x, prompt_alone, atol=1e-5, rtol=1e-4)


def test_bidirectional_separate_prompt_is_the_prompt_encoded_alone():
    model = tiny_model("bidirectional")
    with torch.no_grad():
        _, h_x = model.representations(torch.tensor([[3, 4, 5, 6, 7]]), torch.ones(1, 5, dtype=torch.long),
                                       prompt_lengths=torch.tensor([3]))
        prompt_alone, _ = model.representations(torch.tensor([[3, 4, 5]]), torch.ones(1, 3, dtype=torch.long))
    torch.testing.assert_close(h_x, prompt_alone, atol=1e-5, rtol=1e-4)


def test_prompt_length_from_token_types():
    model = tiny_model("bidirectional")
    ids = torch.tensor([[3, 4, 5, 6, 7, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    types = torch.tensor([[0, 0, 0, 1, 1, 0]])
    with torch.no_grad():
        explicit = model(ids, mask, token_type_ids=types, prompt_lengths=torch.tensor([3])).logits
        derived = model(ids, mask, token_type_ids=types).logits
    torch.testing.assert_close(explicit, derived)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_bidirectional_prefix_mask_encodes_the_prompt_alone_in_the_same_pass(attn):
    """prompt_repr=prefix: h(x) read from the (x, y) pass equals the prompt encoded on its own (prompt_repr=separate),
    with padding; the response tokens still see the prompt, so h(x, y) depends on it and differs from h(x)."""
    torch.manual_seed(0)
    enc = BertModel(BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=32, attn_implementation=attn))
    models = {repr_: VRMForSequenceClassification(
        VRMConfig(encoder_config=enc.config.to_dict(), head="vrm", encoder_kind="bidirectional", pooling="mean",
                  prompt_repr=repr_, num_objectives=3, feature_dim=4), encoder=enc).eval()
        for repr_ in ("separate", "prefix")}
    ids, mask = pad([[3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [15, 16, 17]], "right")
    types = torch.zeros_like(ids)
    prompt_lengths = torch.tensor([3, 2, 2])
    for row, n in enumerate(prompt_lengths.tolist()):
        types[row, n:int(mask[row].sum())] = 1
    with torch.no_grad():
        h_xy, h_x = models["prefix"].representations(ids, mask, types, prompt_lengths)
        sep_xy, sep_x = models["separate"].representations(ids, mask, types, prompt_lengths)
        changed_response = ids.clone()
        changed_response[0, 3] = 40
        h_xy2, h_x2 = models["prefix"].representations(changed_response, mask, types, prompt_lengths)
    assert torch.isfinite(h_xy).all()
    torch.testing.assert_close(h_x, sep_x, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(h_x2, h_x, atol=1e-5, rtol=1e-4)  # h(x) does not see the response
    assert not torch.allclose(h_xy2[0], h_xy[0], atol=1e-4)  # h(x, y) does
    assert not torch.allclose(h_xy, sep_xy, atol=1e-4)  # and is not full attention's h(x, y)


def test_prefix_prompt_repr_is_for_bidirectional_encoders_with_mean_pooling_only():
    with pytest.raises(ValueError, match="prompt_repr='prefix' is a bidirectional"):
        VRMConfig(encoder_kind="decoder", pooling="last", prompt_repr="prefix")
    with pytest.raises(ValueError, match="needs pooling='mean'"):  # the CLS token would never see the response
        VRMConfig(encoder_kind="bidirectional", pooling="cls", prompt_repr="prefix")
