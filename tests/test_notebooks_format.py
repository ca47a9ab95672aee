"""The committed notebooks follow one policy: outputs stripped, python3 kernel, one `parameters` cell
whose DEVICE defaults to "auto", the one shared setup cell, the shape CURRICULUM.md gives (a link to the
previous day, asserts, a plot) and exercises with checks (course_lib/exercises.py says how)."""
import json
import re
from pathlib import Path

import pytest

from course_lib.notebook_setup import SETUP_CELL

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 3


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_policy(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    cells = nb["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), \
        f"{path.name}: commit notebooks with outputs stripped"
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: exactly one cell tagged 'parameters', found {len(tagged)}"
    src = "\n".join("".join(c["source"]) for c in cells)
    earlier = [p.name for p in NOTEBOOKS if p.name < path.name]
    if earlier:   # the previous notebook that exists (days are written out of order)
        assert earlier[-1] in src, f"{path.name}: link the previous notebook, {earlier[-1]}"
    names = {p.name for p in NOTEBOOKS}
    dangling = set(re.findall(r"\d\d_\w+\.ipynb", src)) - names
    assert not dangling, f"{path.name}: links notebooks that do not exist: {sorted(dangling)}"
    assert "assert " in src, f"{path.name}: needs check cells"
    assert re.search(r"plt\.|fig|_plot\(", src), f"{path.name}: needs a plot"


def cells_tagged(nb, tag: str) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code" and tag in c.get("metadata", {}).get("tags", [])]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_setup_cell(path):
    nb = json.loads(path.read_text())
    setup = cells_tagged(nb, "setup")
    assert len(setup) == 1, f"{path.name}: exactly one cell tagged 'setup', found {len(setup)}"
    assert "".join(setup[0]["source"]) == SETUP_CELL, \
        f"{path.name}: the setup cell differs from SETUP_CELL: run `python -m course_lib notebooks --sync-setup`"
    others = [c for c in nb["cells"] if c is not setup[0] and "google.colab" in "".join(c["source"])]
    assert not others, f"{path.name}: Colab set-up lives in the setup cell only"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_default_to_the_auto_device(path):
    params = "".join("".join(c["source"]) for c in cells_tagged(json.loads(path.read_text()), "parameters"))
    assert re.search(r'^DEVICE = os\.environ\.get\("DEVICE", "auto"\)', params, re.M), \
        f'{path.name}: the parameters cell needs DEVICE = os.environ.get("DEVICE", "auto")'


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_exercise_and_check_cells(path):
    nb = json.loads(path.read_text())
    exercises, checks = cells_tagged(nb, "exercise"), cells_tagged(nb, "check")
    assert exercises, f"{path.name}: needs at least one cell tagged 'exercise'"
    assert checks, f"{path.name}: needs at least one cell tagged 'check'"
    bad = [i for i, c in enumerate(nb["cells"])
           if any(c is e for e in exercises) and not "".join(c["source"]).startswith("# Exercise:")]
    assert not bad, f"{path.name}: exercise cells {bad} must start with '# Exercise: <what to write>'"
