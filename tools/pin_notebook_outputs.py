"""Run the notebooks in small mode and keep only the outputs that nbval pins.

nbval compares a cell's fresh output with the stored one only in cells marked
``# NBVAL_CHECK_OUTPUT``, and only when the stored cell has an execution count. Every other
output (figures, progress bars, widget state) is dropped, so the notebooks stay small and
clean. Run it after changing a notebook, from the repository root:

    DDPM_SMALL=1 python tools/pin_notebook_outputs.py notebooks/*.ipynb
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

MARKER = "# NBVAL_CHECK_OUTPUT"


def pin(path: Path) -> int:
    """Execute ``path`` in its folder; keep outputs of marked cells only. Returns their number."""
    notebook = nbformat.read(path, as_version=4)
    executed = nbformat.read(path, as_version=4)
    NotebookClient(executed, timeout=1800, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    pinned = 0
    for cell, run in zip(notebook.cells, executed.cells, strict=True):
        if cell.cell_type != "code":
            continue
        if MARKER in cell.source:
            cell.outputs, cell.execution_count = run.outputs, run.execution_count
            pinned += 1
        else:
            cell.outputs, cell.execution_count = [], None
    notebook.metadata.pop("widgets", None)
    nbformat.write(notebook, path)
    return pinned


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(f"{name}: {pin(Path(name))} pinned cell(s)")
