"""notebooks/quickstart.ipynb: stored without outputs, and it runs top to bottom in this environment's Python."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"


def test_notebook_is_stored_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, "the notebook has no code cells"
    for index, cell in enumerate(code):
        assert cell.outputs == [], f"code cell {index} is stored with outputs"
        assert cell.execution_count is None, f"code cell {index} is stored with an execution count"


def _python3_kernel_of_this_interpreter(folder: Path) -> None:
    """A 'python3' kernelspec under folder/kernels that runs sys.executable (JUPYTER_PATH is searched first)."""
    spec = folder / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (chexcft tests)",
        "language": "python",
    }))


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nbclient import NotebookClient

    _python3_kernel_of_this_interpreter(tmp_path / "jupyter")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    work = tmp_path / "work"
    work.mkdir()
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    client = NotebookClient(notebook, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(work)}})
    client.execute()  # raises CellExecutionError, naming the cell, when any cell fails

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4, "expected the sample images, AUC change, ROC and reliability plots inline"
    assert outputs[-1]["text"].strip() == sys.executable
    out = work / "runs" / "quickstart"
    assert (out / "ensemble" / "ensemble.json").is_file()
    for name in ("samples.png", "auc_before_after_cft.png", "roc_test.png", "reliability_test.png"):
        assert (out / "plots" / name).is_file()

    from chexcft.data import read_table
    from chexcft.demo.data import demo_csv, demo_root
    from chexcft.submission import check_submission, read_submission

    check_submission(read_submission(out / "test_submission.csv"), read_table(demo_csv("test"), demo_root()))
