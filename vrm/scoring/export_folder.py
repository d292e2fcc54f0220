"""An export folder on disk: written atomically (a killed export leaves the previous one in place), described by
``vrm_manifest.json`` (package versions, the sha256 and size of every file) and checked against it."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from vrm.data.files import apply_umask, check_output_folder, folder_lock
from vrm.errors import ExportError, IntegrityError

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
    """The manifest of an export folder, after checking every file it lists against its size and sha256: a
    missing, truncated or changed file is an :class:`~vrm.errors.IntegrityError` naming it. Every loader of ours
    calls this (:meth:`vrm.RewardScorer.from_pretrained`); plain transformers, which knows no manifest, does not."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise IntegrityError(f"{folder} has no {MANIFEST}")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = dict(manifest["files"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise IntegrityError(f"{manifest_path} is not a vrm manifest ({type(err).__name__}: {err}); re-export the "
                             "model") from None
    for name, entry in files.items():
        path = folder / name
        if not path.is_file():
            raise IntegrityError(f"{path} is missing: the export is incomplete ({MANIFEST} lists it); copy it again "
                                 "or re-export the model")
        size = path.stat().st_size
        if size != entry.get("bytes", size):
            raise IntegrityError(f"{path} is {size} bytes, but {MANIFEST} records {entry['bytes']}: the file is "
                                 f"{'truncated (an interrupted copy?)' if size < entry['bytes'] else 'changed'}; copy "
                                 "it again or re-export the model")
        if sha256(path) != entry.get("sha256"):
            raise IntegrityError(f"{path} does not match the sha256 in {MANIFEST}: the file changed since the export "
                                 "(damaged or edited); copy it again or re-export the model")
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
def atomic_folder(out_dir: Path, inputs: Iterable[str | Path] = ()) -> Iterator[Path]:
    """Yield a temporary folder beside ``out_dir``, renamed to ``out_dir`` only when the block completes.

    An existing export at ``out_dir`` is replaced only then; an existing folder that is not an export (no manifest,
    not empty) is refused rather than deleted, and so is a folder holding one of ``inputs`` (the checkpoint). One
    export into ``out_dir`` at a time (:func:`vrm.data.files.folder_lock`); the finished folder gets the umask's
    permissions (:func:`vrm.data.files.apply_umask`). A write that fails (a full disk) leaves the previous export.
    """
    out_dir = Path(str(out_dir).rstrip(os.sep) or os.sep)
    check_output_folder(out_dir, inputs, "export folder")
    with folder_lock(out_dir, "export folder", beside=True):
        recover_interrupted(out_dir)
        if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
            raise ExportError(f"{out_dir} exists and is not a vrm export (no {MANIFEST}); refusing to replace it")
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
        try:
            yield tmp
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ExportError(f"writing the export {out_dir} failed: {err.strerror or err} ({err.filename or tmp}); "
                              "nothing was replaced") from err
        except Exception as err:
            shutil.rmtree(tmp, ignore_errors=True)
            if "No space left" in str(err) or "File too large" in str(err):  # safetensors' own writer's error
                raise ExportError(f"writing the export {out_dir} failed: {err}; nothing was replaced") from err
            raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _move_into_place(tmp, out_dir)


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    try:
        apply_umask(tmp)
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
