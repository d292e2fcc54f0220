"""Pooling picks the right token under left and right padding, for decoder-only and bidirectional encoders."""

from __future__ import annotations

import copy
import itertools
import random

import pytest
import torch
from transformers import BertConfig, BertModel, LlamaConfig, LlamaModel

from vrm.models import pooling
from vrm.models.modeling_vrm import VRMConfig, VRMForSequenceClassification
from vrm.models.pooling import (
    chunk_ends,
    first_token_index,
    last_token_index,
    length_groups,
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


# -- length-sorted encoder passes (config.length_chunks) -----------------------------------------------------------
def test_chunk_ends_by_hand():
    # One padded pass of [1, 1, 5, 5, 5, 9] costs 6 * 9 = 54 tokens; cut after the 5s: 5 * 5 + 1 * 9 = 34 (the best
    # two groups: after the 1s it would be 2 * 1 + 4 * 9 = 38); three groups: 2 + 15 + 9 = 26.
    # (min_tokens=0: here the tokens are few, and the default floor of 64 tokens would keep one pass.)
    assert chunk_ends([1, 1, 5, 5, 5, 9], 1, min_tokens=0) == [6]
    assert chunk_ends([1, 1, 5, 5, 5, 9], 2, min_tokens=0) == [5, 6]
    assert chunk_ends([1, 1, 5, 5, 5, 9], 3, min_tokens=0) == [2, 5, 6]
    assert chunk_ends([1, 1, 5, 5, 5, 9], 3) == [6]  # the 28 tokens saved are under the 64-token floor
    assert chunk_ends([4, 4, 4], 3, min_tokens=0) == [3]  # nothing to save
    # [10] * 9 + [11]: a second pass saves 9 of 110 tokens (8%), a third nothing; with a 10% bar, no cut at all.
    assert chunk_ends([10] * 9 + [11], 3, min_tokens=0) == [9, 10]
    assert chunk_ends([10] * 9 + [11], 3, min_saving=0.1, min_tokens=0) == [10]
    # Scaled by 10: 90 of 1100 tokens saved, over both the 5% (55) and the 64-token bars.
    assert chunk_ends([100] * 9 + [110], 3) == [9, 10]
    assert chunk_ends([], 2) == []


def partition_cost(lengths: list[int], bounds: list[int], saving: float, floor: int) -> float:
    """Padded tokens of the groups ending at ``bounds``, plus, per extra group, the larger of ``saving`` of one pass's
    tokens and ``floor``."""
    starts = [0, *bounds[:-1]]
    padded = sum((b - a) * lengths[b - 1] for a, b in zip(starts, bounds))
    return padded + max(saving * len(lengths) * lengths[-1], floor) * (len(bounds) - 1)


def test_chunk_ends_is_the_best_partition():
    """Against brute force over every cut, with the per-pass charge of min_saving and min_tokens."""
    rng = random.Random(0)
    for _ in range(400):
        lengths = sorted(rng.randint(1, 12) for _ in range(rng.randint(1, 8)))
        k, saving, floor = rng.randint(1, 4), rng.choice([0.0, 0.05, 0.2]), rng.choice([0, 3, 10])
        best = min(partition_cost(lengths, [*cuts, len(lengths)], saving, floor) for c in range(k)
                   for cuts in itertools.combinations(range(1, len(lengths)), c))
        ends = chunk_ends(lengths, k, min_saving=saving, min_tokens=floor)
        assert len(ends) <= k and ends[-1] == len(lengths)
        assert partition_cost(lengths, ends, saving, floor) == pytest.approx(best), (lengths, k, saving, floor, ends)


def test_length_groups_only_where_padding_is_one_sided():
    # Rows of 20, 80 and 10 tokens: one pass 240 tokens; {10, 20} at 20 and {80}: 120 (a third pass saves 10).
    right = (torch.arange(80) < torch.tensor([[20], [80], [10]])).long()
    groups = length_groups(right, 3)
    assert [(idx.tolist(), cols) for idx, cols in groups] == [([2, 0], slice(0, 20)), ([1], slice(0, 80))]
    left = [(idx.tolist(), cols) for idx, cols in length_groups(right.flip(1), 3)]
    assert left == [([2, 0], slice(60, 80)), ([1], slice(0, 80))]
    assert length_groups(right, 1) is None
    assert length_groups(torch.ones(3, 4, dtype=torch.long), 3) is None  # no padding
    mixed = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1], [1, 1, 1, 1]])
    assert length_groups(mixed, 3) is None


def length_chunked_pair(kind: str, prompt_repr: str) -> tuple[VRMForSequenceClassification, ...]:
    """The same tiny model twice: one padded pass, and up to 3 length-sorted passes."""
    one = tiny_model(kind)
    one.config.prompt_repr = prompt_repr
    chunked = copy.deepcopy(one)
    chunked.config.length_chunks = 3
    return one, chunked


@pytest.mark.parametrize("kind, prompt_repr, side", [
    ("bidirectional", "separate", "right"), ("bidirectional", "prefix", "right"), ("decoder", "shared", "left"),
    ("decoder", "shared", "right")])
def test_length_chunks_give_the_one_pass_representations_and_gradients(kind, prompt_repr, side):
    one, chunked = length_chunked_pair(kind, prompt_repr)
    seqs = [[3 + (row + i) % 50 for i in range(length)] for row, length in enumerate((100, 30, 40, 40, 120))]
    ids, mask = pad(seqs, side)
    prompt_lengths = torch.tensor([4, 2, 3, 2, 5])
    calls = []
    # (rows, width) of each pass; the mask is (B, L), or (B, 1, L, L) under prompt_repr=prefix.
    chunked.encoder.register_forward_hook(
        lambda module, args, kwargs, out: calls.append((kwargs["attention_mask"].shape[0],
                                                        kwargs["attention_mask"].shape[-1])), with_kwargs=True)
    outputs = []
    for model in (one, chunked):
        h_xy, h_x = model.representations(ids, mask, prompt_lengths=prompt_lengths)
        (h_xy.sum() + h_x.square().sum()).backward()
        outputs.append((h_xy, h_x, [p.grad for p in model.encoder.parameters()]))
    (a_xy, a_x, a_grads), (b_xy, b_x, b_grads) = outputs
    torch.testing.assert_close(b_xy, a_xy, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(b_x, a_x, atol=1e-5, rtol=1e-4)
    for a, b in zip(a_grads, b_grads):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)
    # Lengths 100, 30, 40, 40, 120: one pass pads to 5 * 120 = 600 tokens, {30, 40, 40} at width 40 and {100, 120}
    # at 120 to 360; a third pass ({100} and {120} apart: 340) would save 20, under the bar of max(5% of 600, 64).
    # (The 5 separate prompts, 2 to 5 tokens, then go in one pass: splitting them saves under 64 tokens.)
    assert (pooling.CHUNK_MIN_SAVING, pooling.CHUNK_MIN_TOKENS) == (0.05, 64)
    assert calls[:2] == [(3, 40), (2, 120)]
    assert calls[2:] == ([(5, 5)] if prompt_repr == "separate" else [])


def test_length_chunks_must_be_positive():
    with pytest.raises(ValueError, match="length_chunks=0 must be an integer >= 1"):
        VRMConfig(length_chunks=0)


def test_separate_prompt_pass_shares_one_embedding_lookup_with_the_same_gradients():
    """prompt_repr=separate with length-sorted passes: the embedding runs once (one dense vocabulary-sized gradient),
    and every gradient equals that of encoding the full rows and the prompts alone from their ids."""
    model, chunked = length_chunked_pair("bidirectional", "separate")
    ids, mask = pad([[3 + (row + i) % 50 for i in range(length)] for row, length in enumerate((100, 30, 40, 40))],
                    "right")
    prompt_lengths = torch.tensor([4, 2, 3, 2])
    lookups = []
    chunked.encoder.get_input_embeddings().register_forward_hook(lambda *_: lookups.append(1))
    h_xy, h_x = chunked.representations(ids, mask, prompt_lengths=prompt_lengths)
    (h_xy.sum() + h_x.square().sum()).backward()
    assert len(lookups) == 1
    # By hand: the full rows, then the prompts on their own, each from ids in one padded pass.
    full = pool(model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state, mask, "mean")
    p_ids, p_mask, _ = prompt_slice(ids, mask, prompt_lengths)
    alone = pool(model.encoder(input_ids=p_ids, attention_mask=p_mask).last_hidden_state, p_mask, "mean")
    (full.sum() + alone.square().sum()).backward()
    torch.testing.assert_close(h_xy, full, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(h_x, alone, atol=1e-5, rtol=1e-4)
    for (name, a), b in zip(model.encoder.named_parameters(), chunked.encoder.parameters()):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4, msg=name)
