"""The notebook is stored executed and runs top to bottom (nbclient) against a tiny VRM export given in VRM_EXPORT."""

from __future__ import annotations

from pathlib import Path

import nbformat
import torch
from conftest import TINY_OVERRIDES, compose_train
from nbclient import NotebookClient

from vrm.models.encoder import load_encoder
from vrm.training.build import architecture, as_container
from vrm.training.module import RewardModule

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "what_vrm_learned.ipynb"


def tiny_export(out: Path) -> Path:
    """A randomly initialised tiny-BERT VRM saved the way vrm-export saves one (no training needed to look inside)."""
    cfg = compose_train(TINY_OVERRIDES, out)
    enc = load_encoder(cfg.encoder)
    torch.manual_seed(0)
    module = RewardModule(architecture(cfg, enc), as_container(cfg.model), as_container(cfg.optim),
                          encoder=enc.model)
    module.net.save_pretrained(out / "export", safe_serialization=True)
    enc.tokenizer.save_pretrained(out / "export")
    return out / "export"


def test_notebook_is_stored_executed():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count is not None for cell in code)
    assert not any(output.output_type == "error" for cell in code for output in cell.outputs)
    assert any("image/png" in output.get("data", {}) for cell in code for output in cell.outputs)


def test_notebook_runs_on_a_tiny_export(tmp_path, monkeypatch):
    monkeypatch.setenv("VRM_EXPORT", str(tiny_export(tmp_path)))
    monkeypatch.setenv("VRM_NOTEBOOK_PAIRS", "48")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs]
    text = "".join(output.get("text", "") for output in outputs)
    assert "48 test pairs" in text and "weight recovery" in text and "reward_std_wrong" in text
    assert sum("image/png" in output.get("data", {}) for output in outputs) >= 3
