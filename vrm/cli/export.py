"""``vrm-export CHECKPOINT OUT_DIR [--with-code | --plain]``: a training checkpoint as a Hugging Face folder."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from vrm.cli.app import call_reporting_errors


def main(argv: Sequence[str] | None = None) -> None:
    """``vrm-export CHECKPOINT OUT_DIR [--with-code | --plain]``."""
    parser = argparse.ArgumentParser(
        prog="vrm-export",
        description="Export a vrm training checkpoint (.ckpt) as a Hugging Face folder: config.json, "
                    "model.safetensors, the tokenizer, a model card (README.md) and vrm_manifest.json (package "
                    "versions, file hashes). 'import vrm' then lets AutoModelForSequenceClassification load it. "
                    "Written atomically.")
    parser.add_argument("checkpoint", help="Lightning checkpoint written by vrm-train (e.g. .../checkpoints/last.ckpt)")
    parser.add_argument("out_dir", help="folder to write; an existing export there is replaced when complete")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--with-code", action="store_true",
                      help="also write modeling_vrm.py and an auto_map, so from_pretrained(OUT_DIR, "
                           "trust_remote_code=True) works without the vrm package")
    kind.add_argument("--plain", action="store_true",
                      help="BT models with a decoder-only encoder: write the encoder architecture's own "
                           "...ForSequenceClassification (e.g. LlamaForSequenceClassification), loadable without vrm")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # the export's steps, with their elapsed time

    def run() -> None:
        from vrm.scoring.export import export_checkpoint

        out = export_checkpoint(args.checkpoint, args.out_dir, with_code=args.with_code, plain=args.plain)
        print(f"exported {args.checkpoint} -> {out}")

    call_reporting_errors(run, extra=(RuntimeError, OSError))
