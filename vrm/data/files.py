"""Where every output may go and how it is written, and who may write into a folder: one rule for every writer
(``vrm-score``, ``vrm-export``, ``vrm-train``'s run folder, ``vrm-eval``).

- :func:`check_output` refuses a target that is not a regular file (a device node such as ``/dev/null``, a FIFO, a
  socket, a folder) or that is one of the run's inputs (same file by device and inode, or the same real path):
  :func:`note_input` records every input file a reader of ours opens, and :func:`check_output` also takes the
  inputs a command already knows. A symbolic link is followed: the file it points at is replaced, the link kept.
- :func:`atomic_write` writes a file atomically (a hidden temporary file beside the target, flushed to disk, then
  renamed onto it) with the permissions a plain ``open()`` would give (``0666 & ~umask``): a temporary file is made
  ``0600``, so renaming it into place would hide outputs from the other accounts of a shared machine.
  :func:`apply_umask` gives a finished temporary folder (an export) the same rule (``0777 & ~umask`` for folders).
- :func:`folder_lock` lets one process at a time write into a folder (a run folder, an export): a second gets
  :class:`~vrm.errors.FolderInUseError` naming the folder and the holder's pid. The lock is ``flock`` on a hidden
  file, so a killed holder's lock is free again (its stale file is taken over).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from vrm.errors import FolderInUseError, OutputError

log = logging.getLogger(__name__)

#: Name of the lock file inside a locked folder (or ``.NAME.lock`` beside a folder that does not exist yet).
LOCK_FILE = ".vrm.lock"
#: (device, inode) -> real path of every input file read in this process (:func:`note_input`).
_INPUTS: dict[tuple[int, int], str] = {}
#: Folders this process holds a lock on: [file descriptor (None when sharing its parent's), lock file, depth].
_HELD: dict[str, list] = {}
_HELD_GUARD = threading.Lock()


# -- permissions ----------------------------------------------------------------------------------
def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    return 0o666 & ~current_umask()


def folder_mode() -> int:
    return 0o777 & ~current_umask()


def apply_umask(folder: Path) -> None:
    """Give ``folder`` and everything under it the permissions of plain ``open()``/``mkdir()``."""
    files, folders = file_mode(), folder_mode()
    for root, _dirs, names in os.walk(folder):
        os.chmod(root, folders)
        for name in names:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, files)


# -- inputs and outputs ---------------------------------------------------------------------------
def kind_of(mode: int) -> str:
    """What a file that is not a regular one is, for a message (from ``os.stat().st_mode``)."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a file"


def note_input(path: str | Path) -> None:
    """Record ``path`` as an input of this process: no output may replace it (:func:`check_output`)."""
    try:
        st = os.stat(path)
    except OSError:
        return
    if stat.S_ISREG(st.st_mode):
        _INPUTS[(st.st_dev, st.st_ino)] = os.path.realpath(path)


def _same_file(target: str, inputs: Iterable[str | Path]) -> str | None:
    """The input that ``target`` is (same device and inode, or same real path), else None."""
    real = os.path.realpath(target)
    try:
        st = os.stat(target)
        key = (st.st_dev, st.st_ino)
    except OSError:
        key = None
    if key is not None and key in _INPUTS and _INPUTS[key] == real:
        return _INPUTS[key]
    for given in inputs:
        if os.path.realpath(given) == real:
            return str(given)
        try:
            if key is not None and os.path.samefile(given, target):
                return str(given)
        except OSError:
            pass
    return None


def check_output(path: str | Path, inputs: Iterable[str | Path] = (), what: str = "output") -> Path:
    """The file to write for ``path`` (a symbolic link's target), after checking the rule of this module: it is
    not a device, FIFO, socket or folder, and not one of ``inputs`` nor an input read by this process."""
    path = Path(path)
    real = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        st = os.stat(real)
    except FileNotFoundError:
        st = None
    except OSError as err:
        raise OutputError(f"{what} {path} cannot be examined: {err.strerror}") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise OutputError(f"{what} {path} is a folder; give the file to write")
        if not stat.S_ISREG(st.st_mode):
            raise OutputError(f"{what} {path} is {kind_of(st.st_mode)}, not a regular file; outputs are written to regular files "
                              "only (it would be replaced by one)")
        same = _same_file(str(real), inputs)
        if same is not None:
            raise OutputError(f"{what} {path} is an input of this run ({same}); writing it would destroy that input:"
                              " give another output path")
    return real


def check_output_folder(folder: str | Path, inputs: Iterable[str | Path] = (), what: str = "output folder") -> Path:
    """A folder to write files into: not an existing file or device, and holding none of ``inputs``."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{what} {folder} is a file, not a folder; give a folder to write into")
    real = os.path.realpath(folder)
    for given in inputs:
        if given and (os.path.realpath(given) + os.sep).startswith(real + os.sep):
            raise OutputError(f"{what} {folder} holds an input of this run ({given}); replacing it would destroy "
                              "that input: give another folder")
    return folder


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", inputs: Iterable[str | Path] = (), what: str = "output",
                 encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a hidden temporary file beside ``path`` (checked by :func:`check_output`); when the block completes it
    is flushed to disk, given ``0666 & ~umask`` and renamed onto ``path``. On any error (a full disk, a kill) the
    old file stays and the temporary file is removed (a SIGKILL leaves at most the hidden file)."""
    target = check_output(path, inputs, what)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as err:  # a read-only folder, a parent that is a file, a pseudo file system
        raise OutputError(f"{what} {path} cannot be written: its folder {target.parent} does not take a new file "
                          f"({err.strerror or err})") from None
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomically(path: str | Path, text: str, inputs: Iterable[str | Path] = ()) -> None:
    with atomic_write(path, inputs=inputs) as out:
        out.write(text)


# -- one writer per folder ------------------------------------------------------------------------
def _lock_path(folder: Path, beside: bool) -> Path:
    return folder.with_name(f".{folder.name}.lock") if beside else folder / LOCK_FILE


def _holder(lock: Path) -> str:
    try:
        return lock.read_text().strip() or "?"
    except OSError:
        return "?"


#: Environment variables in which launchers (Lightning, torchrun, SLURM) give a process its rank.
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")


def _shares_the_holders_run(holder: str) -> bool:
    """A process of another rank of the holder's run (a child Lightning started, or a rank other than 0 by its
    launcher's environment): it writes into the same folder as rank 0, which holds the lock."""
    other_rank = any(os.environ.get(name, "0") not in ("", "0") for name in RANK_VARIABLES)
    return other_rank or (holder.isdigit() and int(holder) == os.getppid())


def acquire_folder_lock(folder: str | Path, what: str = "folder", beside: bool = False) -> None:
    """Take the write lock of ``folder`` (:func:`folder_lock`) until :func:`release_folder_lock`."""
    key = os.path.realpath(folder)
    with _HELD_GUARD:
        if key in _HELD:
            _HELD[key][2] += 1
            return
    folder = Path(folder)
    lock = _lock_path(folder, beside)
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP):  # a file system without locks: write unlocked
                log.warning("%s %s: this file system does not lock files (%s); another process could write into "
                            "it at the same time", what, folder, err.strerror)
                with _HELD_GUARD:
                    _HELD[key] = [None, lock, 1]
                return
            if err.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            holder = _holder(lock)
            if _shares_the_holders_run(holder):
                with _HELD_GUARD:
                    _HELD[key] = [None, lock, 1]
                return
            raise FolderInUseError(f"{what} {folder} is in use by another process (pid {holder}, lock file "
                                   f"{lock}): wait for it to finish, or choose another folder") from None
        try:  # the file may have been removed by its previous holder between our open and our lock: retry
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    with _HELD_GUARD:
        _HELD[key] = [fd, lock, 1]


def release_folder_lock(folder: str | Path) -> None:
    """Undo one :func:`acquire_folder_lock`; the last one removes the lock file and frees the lock."""
    key = os.path.realpath(folder)
    with _HELD_GUARD:
        entry = _HELD.get(key)
        if entry is None:
            return
        entry[2] -= 1
        if entry[2] > 0:
            return
        del _HELD[key]
    fd, lock = entry[0], entry[1]
    if fd is not None:
        try:
            lock.unlink(missing_ok=True)
        finally:
            os.close(fd)


@contextmanager
def folder_lock(folder: str | Path, what: str = "folder", beside: bool = False) -> Iterator[None]:
    """Hold the write lock of ``folder`` for the block; another process holding it is a
    :class:`~vrm.errors.FolderInUseError` naming the folder and its pid. Reentrant within a process; a lock left by
    a dead process is free (``flock`` dies with its holder) and its stale file is taken over. A process started by
    the holder (Lightning's other DDP ranks) shares it. The lock file is ``folder/.vrm.lock``, or ``.NAME.lock``
    beside it (``beside``: a folder replaced as a whole, an export)."""
    acquire_folder_lock(folder, what, beside)
    try:
        yield
    finally:
        release_folder_lock(folder)


# -- a set of outputs replaced as a whole -----------------------------------------------------------
STAGING_PREFIX = ".partial-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def staged_outputs(out_dir: str | Path, owned: Iterable[str], last: str) -> Iterator[Path]:
    """Yield a hidden staging folder inside ``out_dir`` to write a set of outputs into; when the block completes
    the set replaces the previous one: ``last`` (the file whose presence marks a complete set, e.g. ``eval.json``) is
    removed first and moved in last, and, when there was a previous set (``last`` was there), its files (names
    matching the glob patterns ``owned``) that the new set lacks are removed. A kill (SIGTERM) before that leaves the previous set whole, never a mix of two
    sets; its staging folder is removed by the next run."""
    out_dir = Path(out_dir)
    for stale in out_dir.glob(f"{STAGING_PREFIX}*"):
        pid = stale.name[len(STAGING_PREFIX):]
        if stale.is_dir() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    staging = out_dir / f"{STAGING_PREFIX}{os.getpid()}"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        yield staging
        previous = (out_dir / last).is_file()
        (out_dir / last).unlink(missing_ok=True)
        new = {p.name for p in staging.iterdir()}
        for pattern in owned if previous else ():
            for old in out_dir.glob(pattern):
                if old.is_file() and old.name not in new:
                    old.unlink()
        for name in sorted(new - {last}) + ([last] if last in new else []):
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
