"""Exact mid-epoch resume: a training loader whose order and position survive a restart, RNG state in checkpoints,
and checkpoint files written atomically.

Lightning saves ``state_dict()`` of every training dataloader that has one (``fit_loop.on_save_checkpoint``) and
hands it back through ``load_state_dict()`` before the first ``iter()`` of a resumed fit; it calls ``set_epoch`` on
the loader's batch sampler before each epoch's first batch. A loader with a length is not prefetched, so the number
of batches it has yielded in the epoch is the number of training steps started: exactly the batches to skip.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers.trainer_pt_utils import LengthGroupedSampler

from vrm.data.files import check_output

#: Key of the RNG state in a Lightning checkpoint (written by RewardModule.on_save_checkpoint).
RNG_STATE_KEY = "vrm_rng_state"


def epoch_seed(seed: int, epoch: int) -> int:
    """A seed for one epoch's order, from (seed, epoch) alone, so the order never depends on earlier epochs."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


class ResumableBatchSampler(Sampler[list[int]]):
    """Shuffled batches of ``range(n)`` in an order fixed by (seed, epoch); after :meth:`resume` the next epoch
    iterated skips the batches already consumed. ``lengths`` groups similar lengths (``LengthGroupedSampler``)."""

    def __init__(self, n: int, batch_size: int, seed: int, lengths: Sequence[int] | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        self.n, self.batch_size, self.seed, self.lengths = n, batch_size, seed, lengths
        self.epoch = 0
        self.yielded = 0  # batches handed out in the current epoch
        self._skip = 0

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._skip = 0  # a restored position belongs to the restored epoch only
        self.epoch = epoch

    def resume(self, epoch: int, batches_done: int) -> None:
        """Continue ``epoch`` after its first ``batches_done`` batches (the next epoch if it was complete)."""
        if batches_done >= len(self):
            epoch, batches_done = epoch + 1, 0
        self.epoch, self._skip = epoch, batches_done

    def order(self) -> list[int]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        if self.lengths is not None:
            return list(LengthGroupedSampler(self.batch_size, lengths=list(self.lengths), generator=generator))
        return torch.randperm(self.n, generator=generator).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        order, skip = self.order(), self._skip
        self._skip = 0
        self.yielded = skip
        for start in range(skip * self.batch_size, self.n, self.batch_size):
            self.yielded += 1
            yield order[start:start + self.batch_size]


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`ResumableBatchSampler` with the Stateful protocol Lightning checks."""

    def __init__(self, dataset: Dataset, batch_sampler: ResumableBatchSampler, collate_fn: Callable,
                 num_workers: int = 0):
        # Own generator: creating an iterator then never draws from the global torch RNG (which the model samples).
        super().__init__(dataset, batch_sampler=batch_sampler, collate_fn=collate_fn, num_workers=num_workers,
                         generator=torch.Generator().manual_seed(batch_sampler.seed))

    def state_dict(self) -> dict[str, int]:
        sampler: ResumableBatchSampler = self.batch_sampler
        return {"epoch": sampler.epoch, "batches_done": sampler.yielded, "seed": sampler.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler: ResumableBatchSampler = self.batch_sampler
        if state.get("seed", sampler.seed) != sampler.seed:
            raise ValueError(f"the checkpoint's training order used seed={state['seed']}, this run seed="
                             f"{sampler.seed}: resume with the same seed")
        sampler.resume(int(state["epoch"]), int(state["batches_done"]))


def apply_restored_loader_state(trainer) -> None:
    """Hand a resumed fit's saved training-loader state to the loader, from ``on_train_start``.

    Lightning loads it only when it builds the training loader after the restore, but ``configure_optimizers``
    (``trainer.estimated_stepping_batches``) builds it before; so the state would be dropped and the epoch
    replayed from its first batch. The fetcher's iterator is created again so the loader starts where it stopped.
    """
    fit_loop = trainer.fit_loop
    if not fit_loop._combined_loader_states_to_load or fit_loop._combined_loader is None:
        return
    fit_loop._combined_loader._load_state_dicts(fit_loop._combined_loader_states_to_load)
    fit_loop._combined_loader_states_to_load = []
    iter(fit_loop._data_fetcher)


# -- RNG state ------------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """Torch (CPU and CUDA; Pyro and dropout draw from it) and Python RNG states, loadable with weights_only."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- atomic checkpoint files ----------------------------------------------------------------------
class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file beside its target, fsyncs it, then renames it into place.

    Lightning's own write goes through an fsspec transaction whose temporary file lives in the system temp folder;
    where that is another file system the final move is a copy, which a SIGKILL can cut in half.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        path = check_output(path, what="checkpoint")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except RuntimeError as err:  # torch's writer: "file write failed" (a full disk, a file size limit)
            raise OSError(f"writing checkpoint {path} failed: {str(err).splitlines()[0]} (a full disk?); the "
                          "previous checkpoint is kept") from err
        finally:
            tmp.unlink(missing_ok=True)
