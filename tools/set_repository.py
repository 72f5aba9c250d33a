"""Write the workbook's one repository address everywhere it is used.

The address is ``[project.urls] Repository`` in pyproject.toml; this tool only copies it:

- an "Open in Colab" badge at the top of the first markdown cell of every notebooks/*.ipynb;
- their set-up cell (the first code cell, the same in every notebook, written here from
  :data:`SETUP_CELL`), whose ``REPO_URL`` Colab clones;
- the badge table between the ``colab-badges`` markers of README.md.

Run it from the repository root after changing the address or adding a notebook (it rewrites
only what differs, so a second run changes nothing):

    python tools/set_repository.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import tomllib

BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE_LINE = re.compile(r"^\[!\[Open In Colab\]\(.*\)\]\(.*\)\n*")
README_START, README_END = "<!-- colab-badges -->", "<!-- /colab-badges -->"

SETUP_CELL = '''\
# Where does this run? In Colab: fetch and install the workbook, keep its files on Drive.
import importlib.util
import os
import subprocess
import sys

REPO_URL = "{repository}"  # from pyproject.toml
# In Colab: keep checkpoints, samples and figures on Google Drive (it asks your permission)
USE_DRIVE = True  # @param {{type:"boolean"}}

if "google.colab" in sys.modules:  # each notebook gets a new machine: clone, install, go there
    if not os.path.isdir("/content/workbook"):
        subprocess.run(["git", "clone", "-q", "--depth=1", REPO_URL, "/content/workbook"],
                       check=True)
    if importlib.util.find_spec("ddpm_lib") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "/content/workbook"],
                       check=True)
    os.chdir("/content/workbook/notebooks")

from ddpm_lib.notebook import setup_notebook

wb = setup_notebook(seed=0, use_drive=USE_DRIVE)  # DDPM_SMALL=1: small mode (small numbers)'''


def repository_url(root: Path) -> str:
    """pyproject.toml's ``[project.urls] Repository``, without a trailing ``.git`` or ``/``."""
    with (root / "pyproject.toml").open("rb") as file:
        url = tomllib.load(file)["project"]["urls"]["Repository"]
    return url.removesuffix("/").removesuffix(".git")


def colab_url(repository: str, notebook: str) -> str:
    """Colab's address of ``notebooks/<notebook>`` on the main branch of a GitHub repository."""
    owner_and_name = repository.removeprefix("https://github.com/")
    if owner_and_name == repository or owner_and_name.count("/") != 1:
        raise ValueError(f"{repository} is not https://github.com/OWNER/REPO: Colab opens "
                         f"notebooks from GitHub addresses only")
    return f"https://colab.research.google.com/github/{owner_and_name}/blob/main/notebooks/{notebook}"


def badge(repository: str, notebook: str) -> str:
    """The Markdown of an "Open in Colab" badge for ``notebook``."""
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(repository, notebook)})"


def title(notebook: nbformat.NotebookNode) -> str:
    """The text of the first ``# `` heading of the notebook's first cell."""
    lines = notebook.cells[0].source.splitlines()
    return next(line[2:] for line in lines if line.startswith("# "))


def update_notebook(path: Path, repository: str) -> bool:
    """Badge the first markdown cell and rewrite the set-up cell; True if the file changed."""
    notebook = nbformat.read(path, as_version=4)
    top = next(cell for cell in notebook.cells if cell.cell_type == "markdown")
    top.source = f"{badge(repository, path.name)}\n\n{BADGE_LINE.sub('', top.source)}"
    setup = next(cell for cell in notebook.cells if cell.cell_type == "code")
    if "setup_notebook(" not in setup.source:
        raise ValueError(f"{path}: its first code cell is not the set-up cell (no "
                         f"setup_notebook call); make it one, then run this again")
    setup.source = SETUP_CELL.format(repository=repository)
    text = nbformat.writes(notebook) + "\n"
    if text == path.read_text():
        return False
    path.write_text(text)
    return True


def badge_table(repository: str, notebooks: list[Path]) -> str:
    """README's table: one row per notebook, its title linked, its badge."""
    rows = [f"| [{title(nbformat.read(path, as_version=4))}](notebooks/{path.name}) "
            f"| {badge(repository, path.name)} |" for path in notebooks]
    return "\n".join(["| notebook | |", "| --- | --- |", *rows])


def update_readme(path: Path, repository: str, notebooks: list[Path]) -> bool:
    """Rewrite the table between README's ``colab-badges`` markers; True if the file changed."""
    text = path.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{path} lacks the lines {README_START} and {README_END} that enclose "
                         f"the badge table")
    before, rest = text.split(README_START, 1)
    after = rest.split(README_END, 1)[1]
    new = f"{before}{README_START}\n{badge_table(repository, notebooks)}\n{README_END}{after}"
    if new == text:
        return False
    path.write_text(new)
    return True


def main(root: Path) -> list[Path]:
    """Propagate the address under ``root``; return the files that changed."""
    repository = repository_url(root)
    notebooks = sorted((root / "notebooks").glob("*.ipynb"))
    changed = [path for path in notebooks if update_notebook(path, repository)]
    if update_readme(root / "README.md", repository, notebooks):
        changed.append(root / "README.md")
    return changed


if __name__ == "__main__":
    here = Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd()
    changed = main(here)
    print(f"{repository_url(here)}: " + (", ".join(str(p) for p in changed) or "nothing to change"))
