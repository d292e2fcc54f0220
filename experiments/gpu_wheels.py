"""The wheels the GPU check carries, and a check that they install where only the GPU machine's packages are.

The GPU machine has torch, transformers, lightning, peft and accelerate (``BASE``) and no network. ``make``
downloads (``pip wheel --no-deps``, from the package registry) the exact versions installed here of everything
else the check imports (``NEEDED``: pyro-ppl, hydra-core, omegaconf, datasets, trl, ...) and of their requirements,
leaving out whatever ``BASE`` already brings (its requirements, followed through installed metadata), into
``experiments/gpu_wheels/`` (ignored by git) as one ``wheels.tar.xz`` (see :func:`pack`), with MiniLM's tokenizer
files and a ``requirements.txt``. ``gpu_check.sh`` unpacks them into a temporary folder and installs them with
``pip install --no-index --find-links``.

``simulate`` is the honest test of that folder: it makes a virtual environment that sees only ``BASE`` and its
requirements from this machine's site-packages (a ``.pth`` to a folder of links to exactly those distributions'
files; not ``--system-site-packages``, which would see pyro, hydra and the rest), installs the wheels there the
way gpu_check.sh does, with no index, and runs ``gpu_check.sh --cpu --tiny`` with it.

    python experiments/gpu_wheels.py make        # then: du -sh experiments/gpu_wheels (code + wheels <= 64 MiB)
    python experiments/gpu_wheels.py simulate    # a venv with only BASE, the wheels, the CPU check
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from packaging.requirements import Requirement

HERE = Path(__file__).resolve().parent
WHEELS = HERE / "gpu_wheels"
WHEELS_ARCHIVE = "wheels.tar.xz"
#: What the GPU machine has (its requirements come with them).
BASE = ("torch", "transformers", "lightning", "peft", "accelerate")
#: What the GPU check imports beyond BASE: vrm's own requirements, the benchmarks' (TRL, psutil) and the
#: batching server's (fastapi, uvicorn, httpx), whose own requirements are followed.
NEEDED = ("pyro-ppl", "hydra-core", "omegaconf", "datasets", "trl", "psutil", "fastapi", "uvicorn",
          "httpx", "safetensors", "regex", "tqdm", "numpy")
#: Never carried: huge, and the check does not need them (hydra-optuna-sweeper and matplotlib are vrm's
#: requirements for sweeps and plots only).
SKIP = {"hydra-optuna-sweeper", "optuna", "matplotlib", "nvidia-*", "triton"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(name: str, extras: frozenset[str] = frozenset()) -> list[tuple[str, frozenset[str]]]:
    """The installed distribution ``name``'s requirements that apply here (markers evaluated, with ``extras``)."""
    out = []
    for text in md.distribution(name).requires or []:
        req = Requirement(text)
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (extras or {""})):
            continue
        out.append((canonical(req.name), frozenset(req.extras)))
    return out


def closure(names) -> set[str]:
    """``names`` and everything they require, by installed metadata (a requirement not installed is skipped)."""
    seen: set[str] = set()
    todo = [(canonical(n), frozenset()) for n in names]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in done or any(re.fullmatch(p.replace("*", ".*"), name) for p in SKIP):
            continue
        done.add((name, extras))
        try:
            todo += requirements(name, extras)
        except md.PackageNotFoundError:
            continue
        seen.add(name)
    return seen


def carried() -> list[str]:
    """name==version of every distribution to carry: NEEDED's closure less BASE's."""
    return sorted(f"{md.distribution(n).metadata['Name']}=={md.version(n)}" for n in closure(NEEDED) - closure(BASE))


def make(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    pins = carried()
    # pip wheel: a release's wheel as published, or one built here from its sdist (antlr4-python3-runtime 4.9.3,
    # omegaconf's pin, has no wheel; it is pure Python).
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--prefer-binary", "--wheel-dir", str(out),
                    *pins], check=True)
    pack(out)
    (out / "requirements.txt").write_text("".join(p + "\n" for p in pins))
    sys.path.insert(0, str(HERE.parent))
    from vrm.models.encoder import load_tokenizer

    load_tokenizer("minilm").save_pretrained(out / "tokenizer")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{len(pins)} wheels and the tokenizer in {out}: {size / 2**20:.1f} MiB")


def pack(out: Path) -> None:
    """Replace the wheels in ``out`` by one ``wheels.tar.xz`` of them, each re-zipped without compression (the same
    files, so the same RECORD hashes): xz over the stored bytes is about 30% smaller than the wheels' own deflate
    (pyarrow's 55 MB wheel is most of it), which keeps code and wheels within 64 MiB."""
    import tarfile
    import zipfile

    with tarfile.open(out / ".wheels.tar.xz.tmp", "w:xz", preset=6) as tar:
        for wheel in sorted(out.glob("*.whl")):
            stored = out / f".{wheel.name}"
            with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(stored, "w", zipfile.ZIP_STORED) as dst:
                for info in src.infolist():
                    data = src.read(info)
                    info.compress_type = zipfile.ZIP_STORED
                    dst.writestr(info, data)
            tar.add(stored, arcname=wheel.name)
            stored.unlink()
            wheel.unlink()
    os.replace(out / ".wheels.tar.xz.tmp", out / WHEELS_ARCHIVE)


def base_view(target: Path) -> None:
    """Links in ``target`` to the files of BASE's closure only, from this interpreter's site-packages."""
    target.mkdir(parents=True)
    for name in sorted(closure(BASE)):
        dist = md.distribution(name)
        root = Path(dist.locate_file(""))
        for top in {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            if not (target / top).exists() and (root / top).exists():
                (target / top).symlink_to(root / top)


def simulate(wheels: Path, keep: Path | None) -> int:
    work = Path(keep or tempfile.mkdtemp(prefix="gpu_env_"))
    venv, base = work / "venv", work / "base"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # The venv's own setuptools (an old one, on Python 3.11) would hide the one torch was installed with.
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "uninstall", "--quiet", "--yes", "setuptools"],
                   check=True)
    base_view(base)
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()"
                              "['purelib'])"], check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "gpu_machine_base.pth").write_text(f"{base}\n")
    python = venv / "bin" / "python"
    probe = ("import importlib.util as u; missing = [m for m in ('pyro', 'hydra', 'omegaconf', 'datasets', 'trl') "
             "if u.find_spec(m)]; assert not missing, missing; import torch, transformers, lightning, peft, "
             "accelerate; print('base only:', torch.__version__, transformers.__version__)")
    subprocess.run([str(python), "-c", probe], check=True, cwd=work)
    env = dict(os.environ, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", GPU_CHECK_WHEELS=str(wheels),
               PYTHONNOUSERSITE="1")
    env.pop("PYTHONPATH", None)
    done = subprocess.run(["bash", str(HERE / "gpu_check.sh"), "--cpu", "--tiny",
                           "--out", str(work / "gpu_check.md")], env=env, cwd=HERE.parent)
    print(f"simulated GPU-machine environment in {work} (system site-packages: {sysconfig.get_paths()['purelib']})")
    return done.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("make", "list", "simulate"))
    parser.add_argument("--wheels", type=Path, default=WHEELS)
    parser.add_argument("--keep", type=Path, default=None, help="simulate: make the venv in this new folder")
    args = parser.parse_args(argv)
    if args.action == "list":
        print("\n".join(carried()))
        return 0
    if args.action == "make":
        make(args.wheels)
        return 0
    return simulate(args.wheels, args.keep)


if __name__ == "__main__":
    sys.exit(main())
