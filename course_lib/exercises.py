"""Exercises in the notebooks: the convention, the learner's copies, and the proof that checks catch mistakes.

The convention
    An exercise is a code cell tagged ``exercise`` whose first line is ``# Exercise: <what to write>``.
    It defines one or more top-level functions, each with its full signature and a docstring that states
    the contract. The committed body is the working solution, so CI runs the notebook as it stands.
    Code cells tagged ``check`` that follow it (up to the next exercise cell) are its checks: plain
    ``assert cond, "message"`` cells, cheap (seconds), placed before the notebook's measurements.

    Each exercise function has plausible wrong versions in ``tests/exercises/<notebook stem>.py``::

        VARIANTS = {"<function>": {"<variant name>": "<full source of a wrong def>", ...}, ...}

    A variant must run and return a wrong value (off by one, a missing mask, a wrong normalisation):
    one that crashes proves nothing about the checks.

What this module does
    ``stub_source``, ``write_learner_copies``: the learner's copies of the notebooks, each exercise
    function's body replaced by ``raise NotImplementedError``; the signature, the docstring and the
    comments before the def stay. ``python -m course_lib exercises --out DIR`` (``make exercises``).

    ``check_variants``: runs a notebook in a Jupyter kernel, in order, up to its last check cell (the
    measurements after it never run). After an exercise's last check cell it execs each wrong variant in
    the kernel, re-runs that exercise's checks and records "assertion" (the checks caught it), "passed"
    (they did not: the checks need work) or "error: <type>: <message>" (it crashed: no proof either way);
    then it re-execs the solution cell and re-runs the checks once more, which must pass.
    tests/test_exercises.py requires "assertion" for every variant of every notebook.

Design notes
    Variants, checks and the solution travel to the kernel as strings, run by a small plain-Python helper
    (``TRY_IN_KERNEL``) with ``exec(..., globals())``: they replace the notebook's function exactly as a
    learner's cell would, and later cells see whatever the last exec left. Cost: the notebook up to its
    last check cell once, plus (variants + 1) runs of each exercise's check cells.
    The copies go to notebooks/learner/ (git-ignored) beside the originals, so the setup cell finds the
    repository from there too; a conftest.py written there keeps pytest (``make test`` walks notebooks/)
    off them.
"""
from __future__ import annotations

import argparse
import ast
import copy
import io
import json
import tokenize
from dataclasses import dataclass, field
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = ROOT / "notebooks"
LEARNER_DIR = NOTEBOOKS_DIR / "learner"          # git-ignored
# The learner's copies raise NotImplementedError until they are solved: pytest must not collect them
# when `make test` walks notebooks/.
IGNORE_COPIES = "# Written by `python -m course_lib exercises`: pytest skips the learner's copies.\n" \
                "collect_ignore_glob = ['*.ipynb']\n"


def tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def notebook_paths() -> list[Path]:
    return sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


# ---------------------------------------------------------------------------------------------------
# Finding exercises and stubbing them

@dataclass
class Exercise:
    """One exercise cell: its index, the functions it defines and the indices of its check cells."""
    cell: int
    functions: list[str]
    checks: list[int] = field(default_factory=list)


def top_level_functions(src: str) -> list[ast.FunctionDef]:
    return [n for n in ast.parse(src).body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def find_exercises(nb) -> list[Exercise]:
    """The exercise cells of a notebook, each with the check cells between it and the next exercise."""
    exercises = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        if "exercise" in tags(cell):
            names = [f.name for f in top_level_functions("".join(cell["source"]))]
            exercises.append(Exercise(i, names))
        elif "check" in tags(cell) and exercises:      # a check before any exercise belongs to none
            exercises[-1].checks.append(i)
    return exercises


def _char_offset(lines: list[str], lineno: int, col: int) -> int:
    """Offset in the joined source of (1-based line, UTF-8 byte column), as ast reports positions."""
    line = lines[lineno - 1]
    return sum(map(len, lines[:lineno - 1])) + len(line.encode()[:col].decode())


def _header_colon(src: str, fn: ast.FunctionDef) -> tuple[int, int]:
    """(line, char column) of the colon that ends ``fn``'s def header: the first one outside brackets."""
    depth, seen_def = 0, False
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.start[0] < fn.lineno:
            continue
        seen_def = seen_def or (tok.type == tokenize.NAME and tok.string == "def")
        if seen_def and tok.type == tokenize.OP:
            depth += tok.string in "([{"
            depth -= tok.string in ")]}"
            if tok.string == ":" and depth == 0:
                return tok.start
    raise ValueError(f"no header colon for {fn.name}")


def stub_source(src: str) -> str:
    """``src`` with each top-level function's body replaced by ``raise NotImplementedError(...)``.

    Decorators, the def line(s), the docstring and everything outside the functions stay as written;
    nested defs go with the body they live in. Comments inside a body go too (they may give it away).
    """
    lines = io.StringIO(src, newline="").readlines()      # split where ast counts lines
    out = src
    for fn in reversed(top_level_functions(src)):          # from the end: earlier offsets stay valid
        first = fn.body[0]
        has_doc = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
            and isinstance(first.value.value, str)
        if has_doc:
            start = _char_offset(lines, first.end_lineno, first.end_col_offset)
        else:
            line, col = _header_colon(src, fn)
            start = sum(map(len, lines[:line - 1])) + col + 1
        body_on_own_line = first.lineno > fn.lineno and lines[first.lineno - 1][:first.col_offset].isspace()
        indent = " " * (first.col_offset if body_on_own_line else fn.col_offset + 4)
        # The rest of the last line (a comment) and indented comment lines below it are body too.
        end_line = fn.end_lineno
        while end_line < len(lines) and lines[end_line][:1].isspace() and lines[end_line].lstrip().startswith("#"):
            end_line += 1
        end = sum(map(len, lines[:end_line])) - len(lines[end_line - 1]) + len(lines[end_line - 1].rstrip("\r\n"))
        stub = f'\n{indent}raise NotImplementedError("Exercise: write {fn.name}")'
        out = out[:start] + stub + out[end:]
    return out


def learner_copy(nb):
    """A copy of the notebook with every exercise stubbed and every output stripped."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            if "exercise" in tags(cell):
                cell.source = stub_source(cell.source)
    return nb


def write_learner_copies(out_dir=LEARNER_DIR, notebooks=None) -> dict[Path, int]:
    """Write the learner's copy of each notebook into ``out_dir``; returns {copy: number of exercises}."""
    import nbformat                    # notebook tooling loads only when used (not on a bare GPU box)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "conftest.py").write_text(IGNORE_COPIES)
    written = {}
    for path in map(Path, notebooks or notebook_paths()):
        nb = nbformat.read(path, as_version=4)
        names = [f for e in find_exercises(nb) for f in e.functions]
        nbformat.write(learner_copy(nb), out_dir / path.name)
        written[out_dir / path.name] = len(names)
        print(f"{out_dir / path.name}: {len(names)} exercise{'s' * (len(names) != 1)} {' '.join(names)}".rstrip())
    return written


# ---------------------------------------------------------------------------------------------------
# Proving that the checks catch the wrong variants

MARK = "__course_exercise_outcome__ "
# Sent to the kernel once. Plain Python: exec each source in the notebook's namespace and print the
# outcome as one JSON line after MARK; `restore` (the solution cell) is re-exec'd whatever happened.
TRY_IN_KERNEL = """
def _course_try(sources, restore=None):
    import json
    try:
        for src in sources:
            exec(compile(src, "<exercise check>", "exec"), globals())
        outcome = "passed"
    except AssertionError:
        outcome = "assertion"
    except Exception as e:
        outcome = f"error: {type(e).__name__}: {e}"
    finally:
        if restore is not None:
            exec(compile(restore, "<solution>", "exec"), globals())
    print("__course_exercise_outcome__ " + json.dumps(outcome))
"""


@dataclass
class VariantReport:
    """What ``check_variants`` found for one notebook."""
    notebook: str
    solution: str                      # "passed", or where and how the committed notebook failed
    outcomes: dict[str, dict[str, str]] = field(default_factory=dict)   # function -> variant -> outcome

    def summary(self) -> str:
        rows = [f"{self.notebook}: solution {self.solution}"]
        rows += [f"  {fn}/{name}: {outcome}" for fn, vs in self.outcomes.items() for name, outcome in vs.items()]
        return "\n".join(rows)


def _run(client, index: int, code: str) -> str:
    """Run ``code`` (a `_course_try` call) in the kernel; its outcome line, or how the call itself failed."""
    import nbformat
    from nbclient.exceptions import CellExecutionError
    cell = nbformat.v4.new_code_cell(code)
    try:
        client.execute_cell(cell, index)
    except CellExecutionError as e:                 # a time-out interrupts the kernel and lands here
        return f"error: {e.ename}: {e.evalue}"
    text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
    return json.loads(text.split(MARK)[-1].splitlines()[0]) if MARK in text else "error: no outcome printed"


def _try_variants(client, nb, exercise: Exercise, variants: dict) -> tuple[dict, str]:
    """Each variant of the exercise's functions against its checks; then the solution once more."""
    solution = nb.cells[exercise.cell].source
    checks = [nb.cells[i].source for i in exercise.checks]
    at = exercise.checks[-1]
    outcomes = {fn: {name: _run(client, at, f"_course_try({[src, *checks]!r}, {solution!r})")
                     for name, src in variants.get(fn, {}).items()}
                for fn in exercise.functions}
    return outcomes, _run(client, at, f"_course_try({checks!r})")


def check_variants(notebook_path, variants: dict, timeout: int = 600) -> VariantReport:
    """Run the notebook up to its last check cell, trying every wrong variant after its exercise's checks.

    The kernel's working directory is the notebook's folder, as under nbval and Jupyter.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    path = Path(notebook_path)
    nb = nbformat.read(path, as_version=4)
    report = VariantReport(path.name, "passed")
    after = {}                                          # last check cell -> its exercise
    for e in find_exercises(nb):
        if e.checks:
            after[e.checks[-1]] = e
        else:                                           # nothing to catch them: no proof
            report.outcomes.update({fn: dict.fromkeys(variants.get(fn, {}), "error: no check cells")
                                    for fn in e.functions})
    if not after:
        report.solution = "no exercise cell with check cells"
        return report
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", interrupt_on_timeout=True,
                            resources={"metadata": {"path": str(path.parent)}})
    with client.setup_kernel():
        client.execute_cell(nbformat.v4.new_code_cell(TRY_IN_KERNEL), 0)
        for i, cell in enumerate(nb.cells[:max(after) + 1]):
            try:
                client.execute_cell(cell, i)
            except CellExecutionError as e:
                report.solution = f"error in cell {i}: {e.ename}: {e.evalue}"
                return report
            if i in after:
                outcomes, again = _try_variants(client, nb, after[i], variants)
                report.outcomes.update(outcomes)
                if again != "passed":
                    report.solution = f"checks of cell {after[i].cell} after restoring the solution: {again}"
                    return report
    return report


# ---------------------------------------------------------------------------------------------------
# The command line: python -m course_lib exercises --out DIR [NOTEBOOK ...]

def add_exercises_parser(sub) -> None:
    """The ``exercises`` sub-command's flags (registered by course_lib/__main__.py)."""
    p = sub.add_parser("exercises", help="write the learner's copies of the notebooks, exercises stubbed")
    p.add_argument("--out", default=str(LEARNER_DIR), help=f"folder for the copies (default {LEARNER_DIR})")
    p.add_argument("notebooks", nargs="*", help="notebooks to copy (default: all of notebooks/)")
    p.set_defaults(func=cmd_exercises)


def cmd_exercises(args: argparse.Namespace) -> int:
    write_learner_copies(args.out, args.notebooks or None)
    return 0
