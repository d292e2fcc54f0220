"""Padding in training: the HH-RLHF-length fixture, the padding counts of experiments/bench_padding.py, and the
length-grouped training order (resumable mid-epoch, deterministic under the seed, sharded under DDP)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TINY_OVERRIDES, compose_train, load_experiment
from transformers.trainer_pt_utils import LengthGroupedSampler

from vrm.training.resumable import ResumableBatchSampler, ResumableDataLoader

load = load_experiment


def test_hh_length_fixture_follows_the_published_means_and_is_seeded():
    hh = load("hh_lengths")
    pairs = hh.hh_length_pairs(3000, seed=0)
    assert pairs[:5] == hh.hh_length_pairs(5, seed=0)
    assert hh.hh_length_pairs(5, seed=1) != pairs[:5]
    words = [len(p["chosen"].split()) for p in pairs] + [len(p["rejected"].split()) for p in pairs]
    assert np.mean(words) == pytest.approx(hh.RESPONSE_TURN_TOKENS, rel=0.05)
    human = [len(turn.split()) - 1 for p in pairs for turn in p["prompt"].split("\n\n") if turn.startswith("Human:")]
    assert np.mean(human) == pytest.approx(hh.PROMPT_TURN_TOKENS, rel=0.05)
    # The mean example (prompt + one response, in words, role labels left out) is the table's 251.5 tokens.
    example = [sum(len(t.split()) - 1 for t in p["prompt"].split("\n\n")) + len(p["chosen"].split()) for p in pairs]
    assert np.mean(example) == pytest.approx(hh.EXAMPLE_TOKENS, rel=0.06)


def test_padding_counts_match_a_hand_count():
    bench = load("bench_padding")
    # Rows of 4 real tokens padded to 8, next to one full row: one pass computes 2 * 8 = 16 tokens for 12 real.
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 0, 0]])
    batches = [{"attention_mask": mask}, {"attention_mask": torch.ones(2, 3, dtype=torch.long)}]
    counts = bench.padding_counts(batches, chunks=(1, 2))
    assert counts["real_tokens"] == 12 + 6
    assert counts["processed_tokens"][1] == 16 + 6
    # Two passes (8 and 4 columns) save 4 tokens, under the 64-token floor of an extra pass: still one pass.
    assert counts["processed_tokens"][2] == 16 + 6
    long_mask = torch.zeros(2, 200, dtype=torch.long)
    long_mask[0], long_mask[1, :100] = 1, 1  # 300 real tokens; two passes: 200 + 100
    counts = bench.padding_counts([{"attention_mask": long_mask}], chunks=(1, 2))
    assert counts["processed_tokens"] == {1: 400, 2: 300}
    assert counts["ratio"] == {1: 0.75, 2: 1.0}


def test_grouped_order_reaches_the_goal_on_the_hh_fixture(tmp_path, monkeypatch):
    """The data module's grouped order on HH-RLHF lengths: far less padding than the random order, about 0.9 real
    tokens with two length-sorted encoder passes, and within 0.07 of what any order can reach in one pass (a pair's
    chosen and rejected rows pad to the longer one). The issue's goal (>= 0.9) is measured at scale by
    experiments/bench_padding.py (2000 pairs, batches of 16: transformers groups within 50 batches); this file is
    small (400 pairs, batches of 8: groups within 12 batches), so its bar is a little lower."""
    monkeypatch.setenv("VRM_CACHE", str(tmp_path / "cache"))
    bench = load("bench_padding")
    result = bench.measure(pairs=400, batch_size=8, max_length=512, seed=0, workdir=tmp_path)
    default, grouped = result["orders"]["default"], result["orders"]["group_by_length"]
    assert default["real_tokens"] == grouped["real_tokens"]
    assert default["batches"] == grouped["batches"] == 50
    assert grouped["ratio"][1] > default["ratio"][1] + 0.2
    assert grouped["ratio"][2] >= bench.GOAL - 0.02
    assert grouped["ratio"][1] >= result["fixture"]["pair_bound"] - 0.07


def test_grouped_sampler_resumes_mid_epoch_and_is_seeded():
    n = 400  # transformers groups within megabatches of min(n // (4 * batch), 50) batches: 25 here
    lengths = [int(x) for x in np.random.default_rng(0).integers(5, 500, size=n)]

    def loader(seed: int = 3) -> ResumableDataLoader:
        return ResumableDataLoader(list(range(n)), ResumableBatchSampler(n, 4, seed, lengths=lengths),
                                   collate_fn=list)

    first = loader()
    first.batch_sampler.set_epoch(1)
    batches = list(first)
    assert sorted(sum(batches, [])) == list(range(n))
    again = loader()
    again.batch_sampler.set_epoch(1)
    assert list(again) == batches  # the same (seed, epoch), the same order
    other = loader(seed=4)
    other.batch_sampler.set_epoch(1)
    assert list(other) != batches
    it = iter(first)
    consumed = [next(it) for _ in range(5)]
    resumed = loader()
    resumed.load_state_dict(first.state_dict())
    resumed.batch_sampler.set_epoch(1)
    assert consumed + list(resumed) == batches
    # Grouped: each batch's longest row is far closer to its shortest than in a random order.
    spread = np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches])
    shuffled = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    random_spread = np.mean([max(lengths[i] for i in shuffled[k:k + 4]) - min(lengths[i] for i in shuffled[k:k + 4])
                             for k in range(0, n, 4)])
    assert spread < random_spread / 5


@pytest.mark.parametrize("world_size", [2, 3])
def test_grouped_order_under_ddp_shards_every_pair_once(tmp_path, world_size):
    """Under DDP the data module hands Lightning a DataLoader over transformers' LengthGroupedSampler, grouping by
    the global batch (world_size x batch_size, as transformers' Trainer does), and Lightning puts in the
    distributed sampler it picks for it (``_get_distributed_sampler``, as ``_prepare_dataloader`` does: unshuffled,
    a custom sampler not being a RandomSampler). Rank r takes every world_size-th index of the one grouped order,
    the same on every rank (same seed): the ranks share the pairs out without overlap, each rank's k-th batch comes
    from the k-th global batch of the grouped order, and is far less padded than a random order's."""
    from lightning.pytorch.trainer.connectors.data_connector import _get_distributed_sampler
    from lightning.pytorch.utilities.data import _is_dataloader_shuffled, _update_dataloader

    from vrm.training.build import build

    n, batch = 480, 2  # enough pairs that transformers caps its megabatches (50 batches): grouping sizes differ
    train_file = load("hh_lengths").write_hh_length_pairs(tmp_path / "hh.jsonl", n, seed=0)
    cfg = compose_train(TINY_OVERRIDES + ["data=jsonl", f"data.train={train_file}", "data.validation_fraction=0",
                                          "data.test_fraction=0", f"data.batch_size={batch}", "data.max_length=512",
                                          "data.group_by_length=true", "seed=5"], tmp_path)
    indices, masks = [], []
    for rank in range(world_size):
        dm = build(cfg, tmp_path / f"rank{rank}").datamodule
        dm.trainer = SimpleNamespace(world_size=world_size)
        loader = dm.train_dataloader()
        assert isinstance(loader.sampler, LengthGroupedSampler)
        sampler = _get_distributed_sampler(loader, shuffle=_is_dataloader_shuffled(loader), overfit_batches=0,
                                           num_replicas=world_size, rank=rank)
        loader = _update_dataloader(loader, sampler)
        indices.append(list(loader.sampler))
        masks.append([b["attention_mask"].sum(1).tolist() for b in loader])
    assert sorted(i for shard in indices for i in shard) == list(range(n))
    split = dm.splits["train"]
    lengths = [max(len(c), len(r)) for c, r in zip(split["chosen_input_ids"], split["rejected_input_ids"])]
    order = list(LengthGroupedSampler(batch * world_size, lengths=lengths, generator=torch.Generator().manual_seed(5)))
    glob = batch * world_size
    for shard in indices:
        for k in range(0, len(shard), batch):
            assert set(shard[k:k + batch]) <= set(order[k * world_size:k * world_size + glob])

    def real_over_padded(batches: list[list[int]]) -> float:
        return sum(map(sum, batches)) / sum(len(b) * max(b) for b in batches)

    # The file's order is random (made-up pairs): a random order's padding.
    pairs = list(zip(map(len, split["chosen_input_ids"]), map(len, split["rejected_input_ids"])))
    in_file_order = [[m for pair in pairs[k:k + batch] for m in pair] for k in range(0, n, batch)]
    for shard in masks:
        assert real_over_padded(shard) > real_over_padded(in_file_order) + 0.02
