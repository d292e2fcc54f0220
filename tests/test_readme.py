"""The README's two set-up commands stay true: CI runs exactly the test command, the demo command exists."""

from __future__ import annotations

import configparser
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    return [line.strip() for line in lines if line.strip().startswith("pip install torch==")]


def test_readme_has_the_two_commands():
    commands = readme_commands()
    assert len(commands) == 2, commands
    assert commands[0].endswith("vrm-demo")
    assert commands[1].endswith("python -m pytest -q")


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in [line.strip() for line in ci]


def test_console_scripts_named_in_the_readme_exist():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    scripts = {line.split("=")[0].strip() for line in
               parser["options.entry_points"]["console_scripts"].strip().splitlines()}
    assert {"vrm-train", "vrm-export", "vrm-demo"} <= scripts


RESULTS = "experiments/results/"


def test_project_files_point_at_nothing_outside_the_repository():
    """A user's clone has no ``../shared`` and no ``/work``: no tracked text file may send a reader there."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    offenders = []
    for name in tracked:
        path = ROOT / name
        # Results record the absolute paths their run wrote to; they are records, not directions to a reader.
        if name.startswith(RESULTS) or path == Path(__file__) or not path.is_file():
            continue
        text = path.read_text(errors="ignore")
        offenders += [f"{name}: {marker}" for marker in ("../shared", "shared/spec", "/work/") if marker in text]
    assert not offenders, offenders
