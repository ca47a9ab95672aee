"""The exercise harness (course_lib/exercises.py): stubs, learner copies, and the proof, notebook by
notebook, that every wrong variant in tests/exercises/<stem>.py fails its exercise's checks."""
import ast
import runpy
import subprocess
import sys

import nbformat
import pytest

from course_lib.exercises import (ROOT, check_variants, find_exercises, notebook_paths, stub_source,
                                  write_learner_copies)

NOTEBOOKS = notebook_paths()
VARIANTS_DIR = ROOT / "tests" / "exercises"


def load_variants(stem: str) -> dict:
    path = VARIANTS_DIR / f"{stem}.py"
    return runpy.run_path(str(path))["VARIANTS"] if path.exists() else {}


def exercise_functions(path) -> list[str]:
    return [f for e in find_exercises(nbformat.read(path, as_version=4)) for f in e.functions]


def is_stub(fn: ast.FunctionDef) -> bool:
    body = fn.body[1:] if isinstance(fn.body[0], ast.Expr) and isinstance(fn.body[0].value, ast.Constant) \
        else fn.body
    return len(body) == 1 and isinstance(body[0], ast.Raise) and "NotImplementedError" in ast.unparse(body[0])


# ---------------------------------------------------------------------------------------------------
# stub_source

TRICKY = '''# Exercise: write add, one and later
import functools

SCALE = 3   # kept


# a comment before the def: kept
@functools.lru_cache(maxsize=None)
def add(a: int,
        b: int = {"k": 1}["k"],
        key=lambda x: x) -> int:
    """Return a + b (a ≤ b or not): the docstring stays."""
    # a hint inside the body: goes
    def inner(z):
        return key(z)
    return inner(a) + b * SCALE  # trailing comment: goes
    # an indented comment after the body: goes


def one(x): return x + 1   # a one-liner


async def later(q):
    await q


if SCALE:
    def untouched():
        return "in an if: not a top-level def"


class K:
    def method(self):
        return "methods stay"
'''


def test_stub_source_keeps_signatures_docstrings_and_everything_else():
    out = stub_source(TRICKY)
    compile(out, "<stub>", "exec")
    tree = ast.parse(out)
    fns = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    assert list(fns) == ["add", "one", "later"]
    assert all(is_stub(fn) for fn in fns.values())
    assert ast.get_docstring(fns["add"]) == "Return a + b (a ≤ b or not): the docstring stays."
    assert [ast.unparse(d) for d in fns["add"].decorator_list] == ["functools.lru_cache(maxsize=None)"]
    assert ast.unparse(fns["add"].args) == ast.unparse(ast.parse(TRICKY).body[2].args)
    for kept in ("# a comment before the def: kept", "SCALE = 3   # kept", "def add(a: int,\n        b: int",
                 "return \"in an if: not a top-level def\"", "return \"methods stay\""):
        assert kept in out, kept
    for gone in ("hint", "inner", "trailing", "indented comment", "x + 1", "await q"):
        assert gone not in out, gone
    ns = {}
    exec(out, ns)
    with pytest.raises(NotImplementedError, match="Exercise: write add"):
        ns["add"](1)
    with pytest.raises(NotImplementedError, match="Exercise: write one"):
        ns["one"](1)
    assert ns["untouched"]() and ns["K"]().method()


def test_stub_source_of_a_cell_without_functions_is_unchanged():
    assert stub_source("# Exercise: nothing\nx = 1\n") == "# Exercise: nothing\nx = 1\n"


# ---------------------------------------------------------------------------------------------------
# A synthetic notebook proves the harness itself: caught, not caught, crashed, restored, skipped.

def synthetic_notebook(tmp_path, check="assert add(2, 3) == 5, 'add(2, 3) must be 5'"):
    cells = [
        nbformat.v4.new_markdown_cell("# A tiny notebook"),
        nbformat.v4.new_code_cell("import os\nHERE = os.getcwd()"),
        nbformat.v4.new_code_cell('# Exercise: write add\ndef add(a, b):\n    """a + b."""\n    return a + b',
                                  metadata={"tags": ["exercise"]}),
        nbformat.v4.new_code_cell(check, metadata={"tags": ["check"]}),
        nbformat.v4.new_code_cell("# Exercise: write double\ndef double(x):\n    return 2 * x",
                                  metadata={"tags": ["exercise"]}),
        # add must be the solution again here, after its variants ran
        nbformat.v4.new_code_cell("assert double(4) == 8 and add(1, 1) == 2\nassert HERE == os.getcwd()",
                                  metadata={"tags": ["check"]}),
        nbformat.v4.new_code_cell("raise RuntimeError('a cell after the last check must not run')"),
    ]
    path = tmp_path / "00_synthetic.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}}), path)
    return path


SYNTHETIC_VARIANTS = {
    "add": {
        "minus": "def add(a, b):\n    return a - b",
        "hard_coded": "def add(a, b):\n    return 5",               # wrong, but the check cannot tell
        "one_argument": "def add(a):\n    return a",                # crashes the check: TypeError
    },
    "double": {"square": "def double(x):\n    return x * x"},
}


def test_check_variants_on_a_synthetic_notebook(tmp_path):
    report = check_variants(synthetic_notebook(tmp_path), SYNTHETIC_VARIANTS, timeout=120)
    assert report.solution == "passed", report.summary()
    assert report.outcomes["add"]["minus"] == "assertion", report.summary()
    assert report.outcomes["add"]["hard_coded"] == "passed", report.summary()
    assert report.outcomes["add"]["one_argument"].startswith("error: TypeError: "), report.summary()
    assert report.outcomes["double"]["square"] == "assertion", report.summary()


def test_check_variants_reports_a_failing_solution(tmp_path):
    path = synthetic_notebook(tmp_path, check="assert add(2, 3) == 6, 'a check the solution fails'")
    report = check_variants(path, SYNTHETIC_VARIANTS, timeout=120)
    assert report.solution.startswith("error in cell 3: AssertionError"), report.summary()


# ---------------------------------------------------------------------------------------------------
# The command line and the real notebooks

def test_exercises_command_writes_stubbed_copies(tmp_path):
    out = tmp_path / "learner"
    run = subprocess.run([sys.executable, "-m", "course_lib", "exercises", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.splitlines()) == len(NOTEBOOKS), run.stdout    # one line per notebook
    synthetic = synthetic_notebook(tmp_path)
    assert write_learner_copies(out, [synthetic]) == {out / synthetic.name: 2}
    for path in [*NOTEBOOKS, synthetic]:
        nb = nbformat.read(out / path.name, as_version=4)
        assert all(not c.outputs and c.execution_count is None for c in nb.cells if c.cell_type == "code")
        assert len(nb.cells) == len(nbformat.read(path, as_version=4).cells)
        for e in find_exercises(nb):
            fns = [n for n in ast.parse(nb.cells[e.cell].source).body if isinstance(n, ast.FunctionDef)]
            assert fns and all(is_stub(fn) for fn in fns), f"{path.name} cell {e.cell} is not stubbed"
    ns = {}
    exec(nbformat.read(out / synthetic.name, as_version=4).cells[2].source, ns)
    with pytest.raises(NotImplementedError, match="Exercise: write add"):
        ns["add"](2, 3)
    # `make test` walks notebooks/: it must collect the notebooks but not the learner's copies in it
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "--nbval-lax",
                                str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "00_synthetic.ipynb" in collected.stdout and "learner" not in collected.stdout, collected.stdout


def test_every_notebook_has_exercises_and_variants():
    missing = [p.name for p in NOTEBOOKS if not exercise_functions(p)]
    assert not missing, f"notebooks without an exercise cell: {missing}"
    no_variants = [p.name for p in NOTEBOOKS if not (VARIANTS_DIR / f"{p.stem}.py").exists()]
    assert not no_variants, f"notebooks without tests/exercises/<stem>.py: {no_variants}"


WITH_EXERCISES = [p for p in NOTEBOOKS if exercise_functions(p) or (VARIANTS_DIR / f"{p.stem}.py").exists()]


@pytest.mark.parametrize("path", WITH_EXERCISES, ids=lambda p: p.stem)
def test_wrong_variants_fail_the_checks(path):
    variants, functions = load_variants(path.stem), exercise_functions(path)
    unknown = set(variants) - set(functions)
    assert not unknown, f"{path.name}: variants for functions no exercise cell defines: {sorted(unknown)}"
    bare = [f for f in functions if not variants.get(f)]
    assert not bare, f"{path.name}: exercise functions without a wrong variant in tests/exercises: {bare}"
    report = check_variants(path, variants)
    assert report.solution == "passed", report.summary()
    tried = {(fn, name) for fn, vs in report.outcomes.items() for name in vs}
    assert tried == {(fn, name) for fn, vs in variants.items() for name in vs}, report.summary()
    not_caught = [f"{fn}/{name}" for fn, vs in report.outcomes.items() for name, o in vs.items()
                  if o != "assertion"]
    assert not not_caught, f"variants the checks did not catch with an AssertionError: {not_caught}\n" \
                           + report.summary()
