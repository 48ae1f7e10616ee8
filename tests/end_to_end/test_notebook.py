"""notebooks/sample.ipynb runs headless, top to bottom, on a tiny checkpoint."""

import os

import nbformat
import numpy as np
import PIL.Image
from nbclient import NotebookClient

from helpers import REPO
from helpers.sample_models import tiny_checkpoints

NOTEBOOK = os.path.join(REPO, "notebooks", "sample.ipynb")


def _outputs(notebook) -> str:
    text = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            text.append(output.get("text", ""))
            text.append(output.get("data", {}).get("text/plain", ""))
    return "\n".join(text)


def test_sample_notebook_executes(tmp_path, monkeypatch):
    checkpoint, vqgan = tiny_checkpoints(str(tmp_path))
    env = {
        "LIQUID_CHECKPOINT": checkpoint, "LIQUID_VQGAN": vqgan, "LIQUID_DTYPE": "float32",
        "LIQUID_PROMPT": "a red cat", "LIQUID_GRID": "4x4", "LIQUID_NUM_IMAGES": "2",
        "LIQUID_QUESTION": "what is in this image", "LIQUID_TEXT_PROMPT": "a red cat",
        "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    outputs = _outputs(notebook)
    assert "codes (2, 16) images (2, 8, 8, 3)" in outputs
    assert "what is in this image ->" in outputs
    grid = np.asarray(PIL.Image.open(tmp_path / "samples.png"))
    assert grid.ndim == 3 and grid.shape[1] >= 2 * 8
    assert any(output.get("data", {}).get("image/png") for cell in notebook.cells for output in cell.get("outputs", []))
