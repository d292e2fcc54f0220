"""An export folder on disk: written atomically (a killed export leaves the previous one in place), described by
``vrm_manifest.json`` (package versions, the sha256 and size of every file) and checked against it."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from vrm.errors import ExportError

#: The manifest written beside the weights (package versions, file hashes, metrics).
MANIFEST = "vrm_manifest.json"
#: Kept for callers that look for "the export's metadata file".
EXPORT_INFO = MANIFEST
#: Distributions whose versions the manifest records (absent ones are recorded as null).
RECORDED_PACKAGES = ("vrm", "torch", "transformers", "safetensors", "tokenizers", "pyro-ppl", "lightning", "peft")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, info: dict) -> None:
    """``vrm_manifest.json``: ``info``, package versions and the sha256 and size of every other file."""
    files = {p.relative_to(folder).as_posix(): {"sha256": sha256(p), "bytes": p.stat().st_size}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}
    manifest = {"format": "vrm-export", "format_version": 1, **info, "packages": package_versions(), "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def verify_export(folder: str | Path) -> dict:
    """The manifest of an export folder, after checking every file it lists against its sha256 (ExportError)."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise ExportError(f"{folder} has no {MANIFEST}")
    manifest = json.loads(manifest_path.read_text())
    bad = [name for name, entry in manifest["files"].items()
           if not (folder / name).is_file() or sha256(folder / name) != entry["sha256"]]
    if bad:
        raise ExportError(f"{folder}: files missing or changed since export: {', '.join(bad)}")
    return manifest


def recover_interrupted(out_dir: Path) -> None:
    """Undo what a killed export left beside ``out_dir``.

    Partial ``.NAME.tmp-*`` folders are removed. If the kill fell between moving the previous export
    aside (``.NAME.old-*``) and moving the new one in, the previous export is put back.
    """
    if not out_dir.parent.is_dir():
        return
    for stale in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for old in sorted(out_dir.parent.glob(f".{out_dir.name}.old-*")):
        if not out_dir.exists() and (old / MANIFEST).is_file():
            old.rename(out_dir)
        else:
            shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_folder(out_dir: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``out_dir``, renamed to ``out_dir`` only when the block completes.

    An existing export at ``out_dir`` is replaced only then; an existing folder that is not an export (no manifest,
    not empty) is refused rather than deleted.
    """
    recover_interrupted(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
        raise ExportError(f"{out_dir} exists and is not a vrm export (no {MANIFEST}); refusing to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        yield tmp
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
