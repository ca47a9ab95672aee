"""The committed notebooks follow one policy: outputs stripped, python3 kernel, one `parameters` cell,
the shape CURRICULUM.md gives (a link to the previous day, asserts, a plot)."""
import json
import re
from pathlib import Path

import pytest

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
    assert "google.colab" in src, f"{path.name}: needs the Colab set-up cell"
