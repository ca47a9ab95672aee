"""The benchmark programs, one module each, all run as ``python -m course_lib bench <name>``:

    serving   one workload through ours and HF's systems (the default: `bench --workload X` is
              `bench serving --workload X`); --request-rate makes it a rate sweep
    suite     gpu | cpu: the fixed serving runs recorded in data/results/
    kernels   fused   gemv   graphs   mixed      GPU sweeps of Days 9-14
    soak      the engine for N minutes on a CPU
    sampler   one sampling step (Day 06), batched vs a per-request loop
    linear    a CPU decode step's matmuls: F.linear vs the weight-first order the CPU Linear uses
    quant     batch-1 decode per token with int8 / int4 weight-only quantization (Day 18)
    notebooks every notebook under papermill, default parameters: ok or the error, time each

(serving's helpers: rate_sweep.py, the --request-rate mode; cost.py, what a CPU run will cost.)

A module has ``HELP`` (its line in ``bench --help``), ``add_arguments(parser)`` and
``run_cli(args) -> exit code``; ``run_cli`` raises ValueError for a bad flag or a machine that cannot
run it (exit code 2, the message names the flag). Each writes one report through perf/harness.py.
The primitives the notebooks import (timers, roofline, floor, metrics, workloads, peers, shapes) live
one level up and know nothing of these programs.
"""
from __future__ import annotations

import argparse
import importlib
import sys

BENCHMARKS = ("serving", "suite", "kernels", "fused", "gemv", "graphs", "mixed", "soak", "sampler", "linear", "quant", "notebooks")
DEFAULT = "serving"
_OWN_OUTPUT_FLAGS = ("serving", "suite")       # these define --json / --json-dir themselves


def load(name: str):
    """The module of benchmark ``name``."""
    if name not in BENCHMARKS:
        raise ValueError(f"benchmark must be one of {list(BENCHMARKS)}, got {name!r}")
    return importlib.import_module(f"{__name__}.{name}")


def _with_default(args):
    """``bench`` followed by no benchmark name means ``bench serving``: the spelling the README and
    the recorded reports use (`bench --workload ...`, `bench --suite gpu`)."""
    args = list(sys.argv[1:] if args is None else args)
    if not args or (args[0] not in BENCHMARKS and args[0] not in ("-h", "--help")):
        return [DEFAULT, *args]
    return args


def add_bench_parser(sub, device_args=None) -> None:
    """The ``bench`` sub-command (registered by course_lib/__main__.py): one sub-command per
    benchmark, ``device_args(parser)`` adding --device/--dtype to the ones that take them."""
    b = sub.add_parser("bench", help="run a benchmark: serving (default), suite, kernels, fused, gemv, graphs, "
                                     "mixed, soak, sampler, linear, quant, notebooks", description=__doc__.split("\n\n")[0])
    # argparse has no default sub-command: the bench parser inserts it before parsing what follows.
    parse = b.parse_known_args
    b.parse_known_args = lambda args=None, namespace=None: parse(_with_default(args), namespace)
    names = b.add_subparsers(dest="benchmark", metavar="BENCHMARK", parser_class=type(b))
    for name in BENCHMARKS:
        mod = load(name)
        p = names.add_parser(name, help=mod.HELP, description=(mod.__doc__ or mod.HELP).strip(),
                             formatter_class=argparse.RawDescriptionHelpFormatter)   # keep the docstring's layout
        mod.add_arguments(p)
        if name not in _OWN_OUTPUT_FLAGS:
            p.add_argument("--json", default=None, help="write the report here")
            p.add_argument("--json-dir", default=None, help="or into this folder, named by the harness's rule "
                                                            "(default: the current folder)")
        if name == "serving" and device_args is not None:
            device_args(p)
        p.set_defaults(func=lambda args, mod=mod: _run(mod, args))


def _run(mod, args) -> int:
    try:
        return mod.run_cli(args)
    except ValueError as e:               # a bad flag value: one line and exit code 2, like the parser
        print(f"error: {e}", file=sys.stderr)
        return 2
