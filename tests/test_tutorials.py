"""Every tutorial runs top to bottom with its quick defaults on the toy world, and the outputs saved in it are current:
the headline numbers it prints when executed now equal those saved (so the committed notebook never contradicts the
code)."""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "tutorials").glob("*.ipynb"))
QUICK = "01_grpo_step"  # the one notebook of the quick tier (python -m pytest -m "not slow"): the loop, step by step


def code_cells(notebook) -> list:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def headline(notebook) -> dict:
    """The numbers of the one line that starts with "headline: " among the notebook's outputs."""
    lines = [
        line.removeprefix("headline: ")
        for cell in code_cells(notebook)
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream"
        for line in output["text"].splitlines()
        if line.startswith("headline: ")
    ]
    assert len(lines) == 1, f"expected one headline line, found {len(lines)}"
    return json.loads(lines[0])


def test_there_is_a_notebook_per_finding():
    names = [path.stem.split("_")[0] for path in NOTEBOOKS]
    assert names == sorted(set(names)) and len(names) >= 3, names


@pytest.mark.parametrize(
    "path",
    [pytest.param(path, marks=() if path.stem == QUICK else pytest.mark.slow) for path in NOTEBOOKS],
    ids=lambda path: path.stem,
)
def test_tutorial_runs_and_its_saved_outputs_are_current(path, toy_cache, tmp_path):
    saved = nbformat.read(path, as_version=4)
    assert all(cell.execution_count for cell in code_cells(saved)), "saved without running every cell"
    assert not any("PAPER.md" in cell.source for cell in code_cells(saved)), "reads the paper digest at run time"
    assert not any(o.get("output_type") == "error" for cell in code_cells(saved) for o in cell.outputs)
    expected = headline(saved)

    fresh = nbformat.read(path, as_version=4)
    for cell in code_cells(fresh):
        cell.outputs, cell.execution_count = [], None
    # in a scratch directory, so that no run cached beside the notebook is reused
    NotebookClient(fresh, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    measured = headline(fresh)
    assert measured.keys() == expected.keys()
    for key, value in expected.items():
        assert measured[key] == pytest.approx(value, abs=0.02), f"{key}: saved {value}, now {measured[key]}"
