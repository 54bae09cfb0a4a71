"""docs/quickstart.ipynb: stripped of outputs in git, and run end to end in a real Jupyter kernel."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "quickstart.ipynb"


def test_the_notebook_is_stored_without_outputs():
    """Outputs and execution counts are stripped (a diff shows code, not pictures)."""
    doc = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [c for c in doc["cells"] if c["cell_type"] == "code"]
    assert code, "no code cell"
    assert all(c.get("outputs") == [] and c.get("execution_count") is None for c in code)
    assert "widgets" not in doc.get("metadata", {})


@pytest.mark.slow
def test_the_notebook_runs_in_a_jupyter_kernel(tmp_path):
    """Every cell runs in a real kernel (ipykernel via nbclient); the reports show inline."""
    nbformat = pytest.importorskip("nbformat", reason="the notebook extra is not installed")
    nbclient = pytest.importorskip("nbclient", reason="the notebook extra is not installed")
    pytest.importorskip("ipykernel", reason="the notebook extra is not installed")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    inline = [o for o in outputs if "text/html" in o.get("data", {})]
    assert len(inline) == 2 and all(o["data"]["text/html"].startswith("<iframe srcdoc=") for o in inline)
    runs = sorted(p.parent for p in tmp_path.rglob("report.html"))
    assert len(runs) == 2 and all((r / "manifest.json").is_file() for r in runs)
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "epoch 3: val loss" in printed
