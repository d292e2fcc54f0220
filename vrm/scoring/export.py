"""Export a training checkpoint as a Hugging Face folder, written atomically."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from transformers import AutoTokenizer

from vrm.training.module import RewardModule

#: Metadata file written beside the weights.
EXPORT_INFO = "vrm_export.json"


def export_checkpoint(checkpoint: str | Path, out_dir: str | Path, metrics: dict | None = None) -> Path:
    """Write ``config.json``, ``model.safetensors`` and the tokenizer of a checkpoint into ``out_dir``.

    The folder is built beside ``out_dir`` under a temporary name and renamed into place only when
    complete, so an interrupted export never leaves a half-written model; an existing export at
    ``out_dir`` is replaced only then.
    """
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    module = RewardModule.from_checkpoint(checkpoint)
    tokenizer_path = module.hparams.get("tokenizer_path")
    if not tokenizer_path:
        raise ValueError(f"checkpoint {checkpoint} records no tokenizer_path")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        module.net.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        info = {"checkpoint": str(checkpoint.resolve()), "head": module.net.config.head,
                "metrics": metrics or {}}
        (tmp / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n")
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
