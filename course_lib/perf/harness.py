"""One harness for every benchmark: the report envelope, its one writer, its one loader, file names.

Every benchmark (``python -m course_lib bench <name>``, perf/benchmarks/) writes one JSON object:

    {"benchmark": "serving",                         the name after `bench`
     "command":   "python -m course_lib bench ...",  what reproduces it (None: run from Python)
     "timestamp": "2026-12-02T10:00:00+0000",
     "device":    {"type": "cuda", "name": "NVIDIA H200", "slug": "h200", ...},
     "versions":  {"python": ..., "torch": ..., "transformers": ..., "triton": ..., "course_lib_commit": ...},
     ... the benchmark's own figures, at the top level (a notebook reads report["decode"])}

``write_report`` checks the envelope and writes atomically (a run rewrites its file after every
section, so a crash keeps what was measured and never leaves half a file). ``load_report`` checks it
too, and upgrades the shapes written before this harness existed (no benchmark name, the device as a
string, torch/triton versions at the top level, "bench_kernels"-style names), so an old file reads
like a new one. One naming rule, ``report_path``:

    <device>_<topic>[_<model>].json     device "cpu" or "gpu_<slug>" (gpu_h200); topic the benchmark
                                        name, or the workload for a serving run (gpu_h200_nanovllm_qwen3-0.6b)
"""
from __future__ import annotations

import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

ENVELOPE_KEYS = ("benchmark", "command", "timestamp", "device", "versions")
# names the scripts wrote before the harness: the file is the same benchmark under its new name
_OLD_NAMES = {"bench_kernels": "kernels", "bench_graphs": "graphs", "bench_gemv": "gemv",
              "bench_mixed": "mixed", "bench_fused": "fused"}
_SERVING_KEYS = {"model", "workload", "engine", "results"}


# ---- where and with what a run happened ---------------------------------------------------------
def device_slug(name: str) -> str:
    """A short file-name tag from a device name: "NVIDIA H100 80GB HBM3" -> "h100"; any CPU -> "cpu"."""
    if name.lower().startswith("cpu"):
        return "cpu"
    name = name.replace("NVIDIA", "")
    m = re.search(r"\b([A-Z]+\d+[A-Za-z]*)\b", name)
    return m.group(1).lower() if m else re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def device_info(device) -> dict:
    """The envelope's ``device``: type, name (what tables print), slug (file names), and what else
    the device says about itself (compute capability and memory, or the CPU's threads)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        return dict(type="cuda", name=p.name, slug=device_slug(p.name), capability=f"{p.major}.{p.minor}",
                    memory_gb=round(p.total_memory / 1e9, 1))
    proc, threads = platform.processor() or platform.machine(), torch.get_num_threads()
    return dict(type=dev.type, name=f"{dev.type} ({proc}, {threads} threads)", slug=dev.type,
                processor=proc, threads=threads)


def _device_from_name(name: str) -> dict:
    """What an old report's device string tells (nothing is made up: no capability, no memory)."""
    kind = "cpu" if name.lower().startswith("cpu") else "cuda"
    return dict(type=kind, name=name, slug=device_slug(name))


def versions() -> dict:
    """python, torch, transformers, triton (None when missing) and the checkout's short commit
    (``COURSE_LIB_COMMIT`` in the environment names it for a copy made without its git history)."""
    out = dict(python=platform.python_version(), torch=torch.__version__)
    for pkg in ("transformers", "triton"):
        try:
            out[pkg] = __import__(pkg).__version__
        except ImportError:
            out[pkg] = None
    if os.environ.get("COURSE_LIB_COMMIT"):      # a copied tree whose .git (if any) is not its own
        out["course_lib_commit"] = os.environ["COURSE_LIB_COMMIT"]
        return out
    try:
        out["course_lib_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
            cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        out["course_lib_commit"] = None
    return out


def command_line(argv=None) -> str | None:
    """The command that reproduces this run, when it is the course_lib command line (else None: a
    notebook or a test called the benchmark from Python)."""
    argv = sys.argv if argv is None else argv
    if not argv or Path(argv[0]).parent.name != "course_lib" or Path(argv[0]).name != "__main__.py":
        return None
    return "python -m course_lib " + shlex.join(argv[1:])


def make_report(benchmark: str, device, figures: dict | None = None, command: str | None = "auto") -> dict:
    """The envelope (device: a torch device, or a device_info dict) followed by ``figures``."""
    dev = device if isinstance(device, dict) else device_info(device)
    report = dict(benchmark=benchmark, command=command_line() if command == "auto" else command,
                  timestamp=time.strftime("%Y-%m-%dT%H:%M:%S%z"), device=dev, versions=versions())
    clash = set(figures or {}) & set(ENVELOPE_KEYS)
    if clash:
        raise ValueError(f"figures must not use the envelope's keys {sorted(clash)}")
    return {**report, **(figures or {})}


# ---- one writer, one loader -----------------------------------------------------------------------
def check_report(report, where: str = "report") -> dict:
    """``report`` if it is an envelope; else ValueError naming what is wrong and where."""
    if not isinstance(report, dict):
        raise ValueError(f"{where} must hold a JSON object, got {type(report).__name__}")
    missing = [k for k in ENVELOPE_KEYS if k not in report]
    if missing:
        raise ValueError(f"{where} is not a benchmark report: missing {missing}")
    if not isinstance(report["benchmark"], str) or not report["benchmark"]:
        raise ValueError(f"{where}: benchmark must be a non-empty string, got {report['benchmark']!r}")
    dev = report["device"]
    if not isinstance(dev, dict) or not {"type", "name", "slug"} <= dev.keys():
        raise ValueError(f"{where}: device must be a dict with type, name and slug, got {dev!r}")
    if not isinstance(report["versions"], dict):
        raise ValueError(f"{where}: versions must be a dict, got {report['versions']!r}")
    return report


def write_report(report: dict, path) -> Path:
    """Check the envelope, then write ``path`` (parents made) through a temporary file and a rename."""
    check_report(report, str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def upgrade(data: dict) -> dict:
    """An old report in the envelope's shape; every figure kept as it was, what was renamed noted in
    ``legacy``. Reports already in the envelope's shape come back unchanged."""
    if not isinstance(data, dict):
        return data
    out, legacy = dict(data), {}
    name = out.get("benchmark")
    if name is None:                            # the two writers that named nothing
        name = "serving" if _SERVING_KEYS <= out.keys() else "fused" if "decode_step" in out else None
    if name in _OLD_NAMES:
        legacy["benchmark"], name = name, _OLD_NAMES[name]
    if name is None:
        return data                             # not a benchmark report: check_report says so
    out["benchmark"] = name
    if isinstance(out.get("device"), str):
        out["device"] = _device_from_name(out["device"])
    if "versions" not in out and ("torch" in out or "triton" in out):
        out["versions"] = {k: out.pop(k, None) for k in ("torch", "triton")}
    out.setdefault("device", dict(type="unknown", name="not recorded", slug="unknown"))
    out.setdefault("versions", {})             # not recorded: no version is guessed
    out.setdefault("command", None)
    out.setdefault("timestamp", None)
    if legacy:
        out["legacy"] = {**out.get("legacy", {}), **legacy}
    front = {k: out.pop(k) for k in ENVELOPE_KEYS if k in out}
    return {**front, **out}


def load_report(path) -> dict:
    """The report in ``path``, upgraded to the envelope and checked (ValueError if it is not one)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not JSON: {e}") from None
    return check_report(upgrade(data), str(path))


def find_reports(folder, benchmark: str | None = None, pattern: str = "*.json") -> list[tuple[Path, dict]]:
    """(path, report) of every report in ``folder`` matching ``pattern`` (and ``benchmark``), full
    runs before ``quick`` ones, newest first. Files that are not reports are skipped."""
    found = []
    for path in Path(folder).glob(pattern):
        try:
            report = load_report(path)
        except (OSError, ValueError):
            continue
        if benchmark is None or report["benchmark"] == benchmark:
            found.append((path, report))
    return sorted(found, key=lambda f: (not f[1].get("quick", False), f[1]["timestamp"] or "", f[0].name),
                  reverse=True)


def report_path(folder, device: dict, topic: str, model: str | None = None) -> Path:
    """``folder/<cpu | gpu_<slug>>_<topic>[_<model>].json`` (see the module docstring)."""
    prefix = "cpu" if device["type"] == "cpu" else f"gpu_{device['slug']}"
    tag = lambda s: re.sub(r"[^A-Za-z0-9._-]+", "-", s).strip("-.")     # noqa: E731 - "Qwen/Qwen3-0.6B" -> "Qwen-Qwen3-0.6B"
    return Path(folder) / (f"{prefix}_{tag(topic)}" + (f"_{tag(model)}" if model else "") + ".json")


def output_path(args, device: dict, topic: str, model: str | None = None, default_dir: str | None = ".") -> Path | None:
    """Where a benchmark's command line asked for its JSON: ``--json PATH``, else the naming rule in
    ``--json-dir`` (or ``default_dir``; None there and no flag: write nothing)."""
    if getattr(args, "json", None):
        return Path(args.json)
    folder = getattr(args, "json_dir", None) or default_dir
    return None if folder is None else report_path(folder, device, topic, model)


# ---- running sections and requests --------------------------------------------------------------
def guarded(row: dict, fn) -> dict:
    """row updated with fn()'s dict, or with the error fn raised (one bad point must not stop a sweep)."""
    try:
        row.update(fn())
    except Exception as e:                          # noqa: BLE001 - recorded in the JSON instead
        row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return row


class _NoBar:
    """What ``progress`` returns when progress is off: the calls of a tqdm bar, doing nothing."""
    def update(self, n=1):
        pass

    def set_postfix_str(self, s=""):
        pass

    def close(self):
        pass


def progress(total: int, desc: str, enabled: bool = True, unit: str = "req"):
    """A tqdm bar (stderr; a widget in a notebook) over ``total`` units, or a silent stand-in."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit=unit, leave=False, mininterval=0.5, dynamic_ncols=True)
