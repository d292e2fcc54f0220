"""The LightningDataModule: canonical preference pairs -> tokenised, padded pair batches.

Tokenisation runs through ``datasets.map`` with an explicit cache file keyed by the split's fingerprint
and every setting that changes the ids, so a second run with the same data and encoder reads the
tokens from disk instead of tokenising again. Over-long pairs follow the configured policy and are
counted and reported (``truncation_report``), never silently dropped.
"""

from __future__ import annotations

import hashlib
import logging

import datasets
import lightning as L
import pyarrow as pa
import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase
from transformers.trainer_pt_utils import LengthGroupedSampler

from vrm.config.data import DataConfig
from vrm.data.loading import PreferenceData, load_preference_data
from vrm.data.schema import PROMPT_GROUP, prompt_groups_of
from vrm.data.tokenization import TokenizationSettings, cache_dir, tokenizer_fingerprint
from vrm.data.tokenize import TruncationStats, pad_sequences
from vrm.errors import DataError
from vrm.training.resumable import ResumableBatchSampler, ResumableDataLoader

log = logging.getLogger(__name__)

TRAIN, VALIDATION, TEST, SHIFTED = "train", "validation", "test", "shifted"
#: Splits evaluated by ``trainer.test``, in order, when present.
TEST_SPLITS = (TEST, SHIFTED)
SIDES = ("chosen", "rejected")


class PreferenceDataModule(L.LightningDataModule):
    """Loads the configured preference data and serves batches of pairs (chosen rows, then rejected rows)."""

    def __init__(self, cfg: DataConfig, tokenizer: PreTrainedTokenizerBase, encoder_kind: str,
                 use_token_types: bool, use_chat_template: bool = True, output_dir: str | None = None,
                 seed: int = 0):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.output_dir = output_dir
        self.seed = seed
        #: How pairs become ids (a model trained on these batches records the same settings in its config).
        self.tokenization = TokenizationSettings(encoder_kind, cfg.max_length, cfg.truncation, use_token_types,
                                                 use_chat_template)
        self.pair_encoder = self.tokenization.pair_encoder(tokenizer)
        self.use_token_types = use_token_types
        self.data: PreferenceData | None = None
        self.splits: dict[str, datasets.Dataset] = {}
        self.truncation_report: dict[str, str] = {}
        #: Cached frozen-encoder features per split (vrm.training.feature_cache.attach_cached_features);
        #: a split listed here is served as feature batches instead of token batches.
        self.features: dict[str, dict[str, torch.Tensor]] = {}
        #: The training split's prompt groups (its distinct ``subset`` labels, :func:`prompt_groups_of`); each split
        #: then carries the column ``prompt_group`` (the index of a pair's subset, -1 when not one of them).
        self.prompt_groups: list[str] = []
        self._settings_key = "|".join(map(str, (
            tokenizer_fingerprint(tokenizer), encoder_kind, cfg.max_length, cfg.truncation, use_token_types,
            self.pair_encoder.contract.fingerprint(), 3)))

    # -- data preparation -------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        self.data = load_preference_data(self.cfg, self.output_dir)
        for name, split in self.data.splits.items():
            self.splits[name] = self._tokenize(name, split)
        if TRAIN not in self.splits:
            raise ValueError(f"the data has no '{TRAIN}' split (splits: {sorted(self.splits)})")
        if "subset" in self.splits[TRAIN].column_names:
            self.prompt_groups = prompt_groups_of(self.splits[TRAIN]["subset"])
        if self.prompt_groups:
            index = {name: i for i, name in enumerate(self.prompt_groups)}
            for name, split in self.splits.items():
                if PROMPT_GROUP in split.column_names:  # an adapter's own column of that name gives way
                    split = split.remove_columns(PROMPT_GROUP)
                self.splits[name] = split.add_column(PROMPT_GROUP, [index.get(s, -1) for s in split["subset"]])

    @property
    def aspect_names(self) -> list[str]:
        return self.data.aspect_names if self.data is not None else []

    def _encode_batch(self, batch: dict) -> dict:
        out: dict[str, list] = {}
        for side in SIDES:
            encoded = [self.pair_encoder.encode(p, r) for p, r in zip(batch["prompt"], batch[side])]
            out[f"{side}_input_ids"] = [e.input_ids for e in encoded]
            out[f"{side}_prompt_length"] = [e.prompt_length for e in encoded]
            out[f"{side}_truncated"] = [e.truncated for e in encoded]
            if self.use_token_types:
                out[f"{side}_token_type_ids"] = [e.token_type_ids for e in encoded]
        return out

    def _tokenize(self, name: str, split: datasets.Dataset) -> datasets.Dataset:
        fingerprint = hashlib.sha256(f"{split._fingerprint}|{self._settings_key}".encode()).hexdigest()[:16]
        path = cache_dir() / f"{name}-{fingerprint}.arrow"
        path.parent.mkdir(parents=True, exist_ok=True)
        def tokenize(from_cache: bool) -> datasets.Dataset:
            return split.map(self._encode_batch, batched=True, batch_size=256, cache_file_name=str(path),
                             new_fingerprint=fingerprint, load_from_cache_file=from_cache, desc=f"Tokenizing {name}")

        try:
            tokenized = tokenize(from_cache=True)
        except pa.ArrowException as err:  # a damaged cache file (a full disk, a copy cut short): recompute it
            if not path.is_file():
                raise
            log.warning("ignoring unreadable tokenisation cache %s (%s); tokenising %s again", path, err, name)
            path.unlink()
            tokenized = tokenize(from_cache=False)
        stats = TruncationStats()
        dropped = []
        for i, (c, r) in enumerate(zip(tokenized["chosen_truncated"], tokenized["rejected_truncated"])):
            stats.add(c)
            stats.add(r)
            if "dropped" in (c, r):
                dropped.append(i)
        report = stats.summary(self.cfg.max_length, self.cfg.truncation)
        if dropped and len(dropped) == len(tokenized):
            raise DataError(f"the {name} split has no pairs left: all {len(dropped)} of its pairs were dropped by "
                            f"data.truncation=drop, being longer than data.max_length={self.cfg.max_length} tokens "
                            f"({report}); raise data.max_length or truncate instead "
                            "(data.truncation=truncate_prompt_left or truncate_response)")
        if dropped:
            report += f"; {len(dropped)} pairs dropped"
            keep = sorted(set(range(len(tokenized))) - set(dropped))
            tokenized = tokenized.select(keep)
        self.truncation_report[name] = report
        log.info("%s: %d pairs; %s", name, len(tokenized), report)
        return tokenized

    # -- batching ---------------------------------------------------------------------------------
    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        """Right-padded (2B, L) ids and masks with the B chosen rows first, prompt lengths, aspects."""
        ids, mask = pad_sequences([r[f"{side}_input_ids"] for side in SIDES for r in rows],
                                  self.tokenizer.pad_token_id or 0)
        batch = {
            "input_ids": ids,
            "attention_mask": mask,
            "prompt_lengths": torch.tensor([r["chosen_prompt_length"] for r in rows]
                                           + [r["rejected_prompt_length"] for r in rows]),
        }
        if self.use_token_types:
            batch["token_type_ids"] = pad_sequences([r[f"{side}_token_type_ids"] for side in SIDES for r in rows], 0)[0]
        if rows and rows[0].get("aspects_chosen"):
            batch["aspects_chosen"] = self._aspects(rows, "aspects_chosen")
            batch["aspects_rejected"] = self._aspects(rows, "aspects_rejected")
        if rows and PROMPT_GROUP in rows[0]:
            batch[PROMPT_GROUP] = torch.tensor([r[PROMPT_GROUP] for r in rows], dtype=torch.long)
        return batch

    @staticmethod
    def _aspects(rows: list[dict], key: str) -> torch.Tensor:
        """(B, A) ratings, NaN where missing."""
        return torch.tensor([[float("nan") if v is None else v for v in r[key]] for r in rows],
                            dtype=torch.float32)

    def _loader(self, split: datasets.Dataset, train: bool, name: str | None = None) -> DataLoader:
        """Evaluation loaders in row order. The training loader is resumable mid-epoch (vrm.training.resumable) in
        one process; under DDP Lightning puts its DistributedSampler in, and a resume restarts the epoch."""
        batch_size = self.cfg.batch_size if train else self.cfg.eval_batch_size
        resumable = train and not (self.trainer is not None and self.trainer.world_size > 1)
        if name in self.features:
            from vrm.training.feature_cache import FeatureDataset, feature_loader

            if not resumable:
                return feature_loader(self.features[name], split, batch_size, shuffle=train,
                                      generator=torch.Generator().manual_seed(self.seed) if train else None)
            dataset = FeatureDataset(self.features[name], split)
            return ResumableDataLoader(dataset, ResumableBatchSampler(len(dataset), batch_size, self.seed),
                                       collate_fn=dataset.collate)
        columns = [c for c in split.column_names if c.endswith(("_input_ids", "_prompt_length", "_token_type_ids"))
                   or c.startswith("aspects_") or c == PROMPT_GROUP]
        split = split.select_columns(columns)
        if not train:
            return DataLoader(split, batch_size=batch_size, collate_fn=self.collate, num_workers=self.cfg.num_workers)
        lengths = None
        if self.cfg.group_by_length:
            lengths = [max(a, b) for a, b in zip(map(len, split["chosen_input_ids"]),
                                                 map(len, split["rejected_input_ids"]))]
        if resumable:
            sampler = ResumableBatchSampler(len(split), batch_size, self.seed, lengths=lengths)
            return ResumableDataLoader(split, sampler, collate_fn=self.collate, num_workers=self.cfg.num_workers)
        generator = torch.Generator().manual_seed(self.seed)
        # Under DDP Lightning shards this order unshuffled (rank r takes every world_size-th index), so the groups
        # are of the global batch (as transformers' Trainer groups): each rank's batch comes from one of them.
        world_size = 1 if self.trainer is None else self.trainer.world_size
        sampler = None if lengths is None else LengthGroupedSampler(batch_size * world_size, lengths=lengths,
                                                                    generator=generator)
        return DataLoader(split, batch_size=batch_size, shuffle=sampler is None, sampler=sampler, generator=generator,
                          collate_fn=self.collate, num_workers=self.cfg.num_workers)

    def token_loader(self, split: datasets.Dataset) -> DataLoader:
        """Token batches of ``split`` in row order (what the feature cache encodes)."""
        return self._loader(split, train=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.splits[TRAIN], train=True, name=TRAIN)

    def val_dataloader(self) -> DataLoader:
        split = self.splits.get(VALIDATION)
        return self._loader(split, train=False, name=VALIDATION) if split is not None else []

    @property
    def test_split_names(self) -> list[str]:
        return [s for s in TEST_SPLITS if s in self.splits]

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(self.splits[s], train=False, name=s) for s in self.test_split_names]
