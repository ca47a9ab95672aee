"""``python -m course_lib bench notebooks``: run every notebook top to bottom with papermill and its
default parameters, as a learner would, and record how long each took.

    python -m course_lib bench notebooks [--only 04,06] [--timeout-s 600] [--out-dir DIR]
                                         [--json PATH | --json-dir DIR]          # <device>_notebooks.json

The notebooks pick their own device (``DEVICE="auto"``: CUDA when there is one), so the report's
device is the one ``auto`` finds. Each row: the notebook, ``ok`` or the error (the exception papermill
raised: a failed check cell is a ``PapermillExecutionError`` naming the cell), its wall time (kernel
start included) and its slowest cell. The executed copies go to ``--out-dir`` (default: a temporary
folder, deleted). CI runs the same notebooks under nbval on the CPU (``make test``); this is the way
to run them on another machine, a GPU one for instance, without nbval.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch

from ..harness import device_info, make_report, output_path, progress, write_report

HELP = "every notebook under papermill with default parameters: ok or the error, wall time per notebook"

NOTEBOOKS = Path(__file__).resolve().parents[3] / "notebooks"


def slowest_cell(path: Path) -> dict | None:
    """The executed notebook's slowest code cell (papermill records each cell's duration)."""
    cells = json.loads(path.read_text())["cells"]
    timed = [(c.get("metadata", {}).get("papermill", {}).get("duration") or 0.0, i)
             for i, c in enumerate(cells) if c["cell_type"] == "code"]
    if not timed:
        return None
    s, i = max(timed)
    return dict(cell=i, s=round(s, 2))


def run(paths: list[Path], out_dir: Path, timeout_s: float, log=print, on_row=None) -> list[dict]:
    """One row per notebook (``on_row(rows)`` after each, so a run cut short keeps what it did)."""
    import papermill as pm
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    bar = progress(len(paths), "notebooks", unit="nb")
    for nb in paths:
        out = out_dir / nb.name
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(str(nb), str(out), cwd=str(nb.parent), kernel_name="python3",
                                execution_timeout=timeout_s, progress_bar=False, log_output=False)
            status = "ok"
        except Exception as e:                              # noqa: BLE001 - recorded, then the next one
            status = f"{type(e).__name__}: {str(e).strip()[-400:]}"
        wall = time.perf_counter() - t0
        row = dict(notebook=nb.name, status=status, wall_s=round(wall, 2))
        if out.exists():
            row["slowest_cell"] = slowest_cell(out)
        rows.append(row)
        if on_row is not None:
            on_row(rows)
        bar.update()
        log(f"{nb.name:<42} {wall:7.1f} s  {status[:100]}")
    bar.close()
    return rows


def add_arguments(p) -> None:
    p.add_argument("--only", default=None, help="comma-separated day numbers (default: every notebook)")
    p.add_argument("--timeout-s", type=float, default=600, help="per cell, as papermill's execution_timeout")
    p.add_argument("--out-dir", default=None, help="keep the executed notebooks here")


def run_cli(args) -> int:
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        days = {d.strip().zfill(2) for d in args.only.split(",")}
        known = {p.name[:2] for p in paths}
        if not days <= known:
            raise ValueError(f"--only must name days from {sorted(known)}, got {sorted(days - known)}")
        paths = [p for p in paths if p.name[:2] in days]
    if not args.timeout_s > 0:
        raise ValueError(f"--timeout-s must be a positive number of seconds, got {args.timeout_s}")
    dev = device_info("cuda" if torch.cuda.is_available() else "cpu")
    path = output_path(args, dev, "notebooks")
    t0 = time.perf_counter()

    def report(rows):
        return make_report("notebooks", dev, dict(parameters="defaults (DEVICE auto)",
                                                  total_s=round(time.perf_counter() - t0, 1), planned=len(paths),
                                                  passed=sum(r["status"] == "ok" for r in rows), notebooks=rows))

    def save(rows):
        if path is not None:
            write_report(report(rows), path)
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(paths, Path(args.out_dir or tmp), args.timeout_s, on_row=save)
    final = report(rows)
    save(rows)
    if path is not None:
        print(f"wrote {path}")
    print(f"{final['passed']} of {len(rows)} notebooks ran without error in {final['total_s']:.0f} s")
    return 0 if final["passed"] == len(rows) else 1
