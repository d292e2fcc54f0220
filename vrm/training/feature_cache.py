"""On-disk cache of a frozen encoder's pooled representations, so sweep trials train only the heads.

With ``encoder.train_mode=frozen`` the encoder runs in eval mode without gradients, so h(x, y) and h(x)
are pure functions of the token ids. They are computed once per split and kept as safetensors files
under ``$VRM_CACHE/features/``, named by a sha256 of everything that decides them (:func:`feature_key_parts`):
the encoder (name, config and a hash of its weights), kind, pooling, prompt representation, whether the
head needs h(x), max length, truncation, tokenizer fingerprint and the split's token ids. Changing any
of them gives another file. Files are written to a temporary name and moved into place with
``os.replace``, so two processes writing the same key at once are safe: the last complete write wins and
a reader never sees a partial file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sized
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.compute as pc
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch.utils.data import DataLoader, Dataset

from vrm.data.files import atomic_write
from vrm.data.progress import progress_bar
from vrm.data.schema import PROMPT_GROUP
from vrm.data.tokenization import TokenizationSettings, cache_dir, tokenizer_fingerprint
from vrm.models.modeling_vrm import VRMForSequenceClassification

log = logging.getLogger(__name__)

#: Batch keys of cached features (B, H): the training loop skips the encoder when they are present.
H_PROMPT, H_CHOSEN, H_REJECTED = "h_prompt", "h_chosen", "h_rejected"
FEATURE_KEYS = (H_PROMPT, H_CHOSEN, H_REJECTED)
#: Bump when the layout or the meaning of a cached file changes.
CACHE_VERSION = 1
#: Token columns of a tokenised split (vrm.training.datamodule) that decide the features.
TOKEN_COLUMN_SUFFIXES = ("_input_ids", "_prompt_length", "_token_type_ids")


def feature_cache_dir() -> Path:
    """``$VRM_CACHE/features`` (next to the tokenisation cache of :func:`vrm.data.tokenization.cache_dir`)."""
    return cache_dir().parent / "features"


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer (names, dtypes, shapes and bytes): the encoder's exact weights."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().data if t.numel() else b"")
    return h.hexdigest()


def encoder_identity(path: str, model: torch.nn.Module) -> dict[str, Any]:
    """What makes one encoder: its configured path, class, config and weights (random init included)."""
    config = model.config.to_dict() if hasattr(model, "config") else {}
    return {"path": path, "class": type(model).__name__,
            "config": json.dumps(config, sort_keys=True, default=str), "weights": weights_fingerprint(model)}


def split_fingerprint(split: datasets.Dataset) -> str:
    """sha256 of a tokenised split's token ids, token types and prompt lengths, in row order."""
    if split._indices is not None:
        split = split.flatten_indices()
    h = hashlib.sha256(str(len(split)).encode())
    for column in sorted(c for c in split.column_names if c.endswith(TOKEN_COLUMN_SUFFIXES)):
        values = split.data.column(column).combine_chunks()
        h.update(column.encode())
        if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
            h.update(pc.list_value_length(values).to_numpy(zero_copy_only=False).tobytes())
            values = pc.list_flatten(values)
        h.update(values.to_numpy(zero_copy_only=False).tobytes())
    return h.hexdigest()


def feature_key_parts(net: VRMForSequenceClassification, encoder_id: dict[str, Any], tokenizer_fp: str,
                      split_fp: str) -> dict[str, Any]:
    """Every input that decides the cached features of one split; the cache key is their hash."""
    c = net.config
    return {"version": CACHE_VERSION, "encoder": encoder_id, "encoder_kind": c.encoder_kind, "pooling": c.pooling,
            "prompt_repr": c.prompt_repr, "needs_prompt": net.needs_prompt,
            "tokenization": TokenizationSettings.from_config(c).to_dict(), "tokenizer": tokenizer_fp,
            "tokens": split_fp}


def feature_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def save_features(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write atomically (:func:`vrm.data.files.atomic_write`: a temporary file in the same folder, then
    ``os.replace`` onto ``path``, with the umask's permissions)."""
    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    with atomic_write(path, "wb") as out:
        out.write(data)


def load_features(path: str | Path) -> dict[str, torch.Tensor] | None:
    """The cached tensors, or None when the file is missing or unreadable (then it is recomputed)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return load_file(path)
    except (SafetensorError, OSError) as err:
        log.warning("ignoring unreadable feature cache %s: %s", path, err)
        return None


def usable_features(features: dict[str, torch.Tensor], rows: int, width: int, path: Path) -> bool:
    """Whether a cache entry holds the chosen and rejected features of ``rows`` pairs, ``width`` wide and finite (a
    damaged or foreign file of the right name is recomputed, with a warning, instead of training on it)."""
    shapes_ok = {H_CHOSEN, H_REJECTED} <= set(features) and all(
        f.dim() == 2 and tuple(f.shape) == (rows, width) and torch.is_floating_point(f) for f in features.values())
    if shapes_ok and all(bool(torch.isfinite(f).all()) for f in features.values()):
        return True
    found = {k: tuple(v.shape) for k, v in features.items()}
    log.warning("ignoring feature cache %s: expected %s and %s of shape (%d, %d), finite; found %s", path, H_CHOSEN,
                H_REJECTED, rows, width, found if not shapes_ok else "non-finite values")
    return False


@torch.no_grad()
def compute_features(net: VRMForSequenceClassification, batches: Iterable[dict[str, torch.Tensor]],
                     desc: str = "encoding") -> dict[str, torch.Tensor]:
    """h_chosen, h_rejected (N, H) and, when the head needs it, h_prompt (N, H) over pair batches in order, with a
    progress bar (``desc``) over the batches.

    The encoder runs in eval mode (no dropout) exactly as the frozen-encoder training loop runs it;
    every module's train/eval mode is restored afterwards.
    """
    modes = {m: m.training for m in net.modules()}
    net.eval()
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in FEATURE_KEYS}
    bar = progress_bar(len(batches) if isinstance(batches, Sized) else None, desc, unit="batch")
    try:
        for batch in batches:
            n = batch["input_ids"].shape[0] // 2
            h_xy, h_x = net.representations(batch["input_ids"], batch["attention_mask"],
                                            batch.get("token_type_ids"), batch["prompt_lengths"], num_prompts=n)
            parts[H_CHOSEN].append(h_xy[:n])
            parts[H_REJECTED].append(h_xy[n:])
            if h_x is not None:
                parts[H_PROMPT].append(h_x)
            bar.update(1)
    finally:
        bar.close()
        for module, mode in modes.items():
            module.training = mode
    return {k: torch.cat(v) for k, v in parts.items() if v}


def cached_features(net: VRMForSequenceClassification, split: datasets.Dataset, batches: Iterable[dict],
                    encoder_id: dict[str, Any], tokenizer_fp: str, name: str = "split") -> dict[str, torch.Tensor]:
    """The features of ``split`` from the cache, computed from ``batches`` (its rows in order) on a miss."""
    parts = feature_key_parts(net, encoder_id, tokenizer_fp, split_fingerprint(split))
    path = feature_cache_dir() / f"{feature_key(parts)}.safetensors"
    features = load_features(path)
    if features is not None and usable_features(features, len(split), net.encoder.config.hidden_size, path):
        log.info("%s: %d pairs of cached encoder features from %s", name, len(split), path)
        return features
    features = compute_features(net, batches, f"encoding {name} for the feature cache")
    save_features(path, features, metadata={"key_parts": json.dumps(parts, sort_keys=True, default=str)})
    log.info("%s: cached encoder features of %d pairs in %s", name, len(split), path)
    return features


class FeatureDataset(Dataset):
    """Rows of cached features (plus the split's aspect ratings, when it has them)."""

    def __init__(self, features: dict[str, torch.Tensor], split: datasets.Dataset):
        lengths = {k: v.shape[0] for k, v in features.items()}
        if set(lengths.values()) != {len(split)}:
            raise ValueError(f"cached features have {lengths} rows but the split has {len(split)}")
        self.features = features
        aspect_columns = [c for c in split.column_names if c.startswith("aspects_")]
        self.aspects = split.select_columns(aspect_columns) if aspect_columns else None
        self.groups = torch.tensor(split[PROMPT_GROUP], dtype=torch.long) if PROMPT_GROUP in split.column_names \
            else None

    def __len__(self) -> int:
        return next(iter(self.features.values())).shape[0]

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """(B, H) feature tensors under :data:`FEATURE_KEYS`, (B, A) aspects with NaN where missing, and the (B,)
        prompt groups when the split has them."""
        rows = torch.tensor(indices)
        batch = {k: v[rows] for k, v in self.features.items()}
        if self.groups is not None:
            batch[PROMPT_GROUP] = self.groups[rows]
        if self.aspects is not None:
            picked = self.aspects[indices]
            if picked.get("aspects_chosen") and picked["aspects_chosen"][0]:
                for key in ("aspects_chosen", "aspects_rejected"):
                    batch[key] = torch.tensor([[float("nan") if v is None else v for v in r] for r in picked[key]],
                                              dtype=torch.float32)
        return batch


def feature_loader(features: dict[str, torch.Tensor], split: datasets.Dataset, batch_size: int, shuffle: bool,
                   generator: torch.Generator | None) -> DataLoader:
    dataset = FeatureDataset(features, split)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      collate_fn=dataset.collate)


class SplitFeatures(Mapping):
    """The cached features of each split of a data module, loaded (or computed and cached) on first use.

    Lazy, so a run encodes only the splits it uses (no test splits with ``test=false``).
    """

    def __init__(self, datamodule, net: VRMForSequenceClassification, encoder_id: dict[str, Any]):
        self.datamodule, self.net, self.encoder_id = datamodule, net, encoder_id
        self.tokenizer_fp = tokenizer_fingerprint(datamodule.tokenizer)
        self._loaded: dict[str, dict[str, torch.Tensor]] = {}

    def __getitem__(self, name: str) -> dict[str, torch.Tensor]:
        if name not in self._loaded:
            split = self.datamodule.splits[name]
            self._loaded[name] = cached_features(self.net, split, self.datamodule.token_loader(split),
                                                 self.encoder_id, self.tokenizer_fp, name)
        return self._loaded[name]

    def __contains__(self, name: object) -> bool:
        return name in self.datamodule.splits

    def __iter__(self) -> Iterator[str]:
        return iter(self.datamodule.splits)

    def __len__(self) -> int:
        return len(self.datamodule.splits)


def attach_cached_features(datamodule, net: VRMForSequenceClassification, encoder_id: dict[str, Any]) -> None:
    """Serve every split of ``datamodule`` as cached features (each computed and cached on first use)."""
    datamodule.setup()
    datamodule.features = SplitFeatures(datamodule, net, encoder_id)
