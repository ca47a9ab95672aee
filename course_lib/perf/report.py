"""Tables and a plot made from benchmark reports, and ``python -m course_lib report``.

``format_table`` is the table ``bench serving`` prints after a run. The ``report`` command reads every
report in data/results/ through the harness's loader (perf/harness.py: any benchmark, old shapes
upgraded), rewrites the README's performance section between the two markers below (the table of
serving runs, then a list of every other recorded benchmark with its command) and draws
data/results/perf.png. ``report --check`` rewrites nothing and exits 1 if the README's section is
not what the files give (tests/test_bench.py runs it, so a stale README fails CI).
"""
from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path

from .harness import find_reports

START, END = "<!-- perf-table:start -->", "<!-- perf-table:end -->"
PEERS = ("hf-static", "hf-cb")                      # the ratio columns
ORDER = ("hf-static", "hf-static-compile", "hf-cb", "static", "continuous")   # baselines first
_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
ROOT = Path(__file__).resolve().parents[2]


def notes(r: dict) -> str:
    """What a reader must know about a row: a sample, a partial run, whether a compile took."""
    out = []
    if "partial" in r:
        p, of = r["partial"], r.get("sample_of", 0)
        sent = f"the first {p['submitted']} of {of}" if of > p["submitted"] else f"{p['submitted']}"
        out.append(f"partial: {p['finished']} of {sent} finished in its {p['guard_s']:.0f} s guard")
    elif "sample_of" in r:
        out.append(f"{r['num_requests']} of {r['sample_of']}")
    if "compile" in r:
        c, b = r["compile"], r.get("batch1", {})
        out.append(("compiled" if c.get("compiled") else "NOT compiled")
                   + (f", batch 1 {b['ms_per_token_compiled']:.3g} ms/token ({b['speedup']:.2f}x eager)"
                      if "speedup" in b else ""))
    return "; ".join(out)


def format_table(report: dict) -> str:
    """One row per system of one serving report (what ``bench`` prints)."""
    import pandas as pd
    rows = {}
    for system, r in report["results"].items():
        if "error" in r:
            rows[system] = {"error": r["error"][:60]}
            continue
        rows[system] = {"requests": r.get("num_requests"), "out tok/s": r["output_tok_per_s"],
                        "req/s": r["requests_per_s"], "x hf-static": r.get("ratio_to_hf_static"),
                        "x hf-cb": r.get("ratio_to_hf_cb"), "floor frac": r.get("floor_fraction"),
                        "TTFT p50 s": r["ttft_p50_s"], "TTFT p99 s": r["ttft_p99_s"],
                        "TPOT p50 ms": _ms(r["tpot_p50_s"]), "TPOT p99 ms": _ms(r["tpot_p99_s"]),
                        "E2E p50 s": r["e2e_p50_s"], "E2E p99 s": r["e2e_p99_s"], "notes": notes(r) or None}
    table = pd.DataFrame.from_dict(rows, orient="index").dropna(axis=1, how="all")   # e.g. no hf-cb
    return table.to_string(float_format=lambda x: f"{x:.3g}")


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1e3 * seconds


def load_reports(results_dir, benchmark: str | None = "serving") -> list[tuple[Path, dict]]:
    """(path, report) for every report of ``benchmark`` (None: any) in ``results_dir``, by file name."""
    return sorted(find_reports(results_dir, benchmark), key=lambda f: f[0].name)


def _num(x: float | None, unit: str = "") -> str:
    if x is None:
        return "—"
    return (f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}") + unit


def _ratio(x: float) -> str:
    return f"{x:.2f}x" if x < 10 else f"{x:.1f}x"


def _versions(v: dict) -> str:
    return " / ".join(str(v.get(k) or "—") for k in ("torch", "transformers", "triton"))


def _row(i: int, link: str, report: dict, system: str, r: dict) -> str:
    results, m = report["results"], report["model"]
    tok_s = r.get("output_tok_per_s")
    ratios = [_ratio(tok_s / results[p]["output_tok_per_s"])
              if tok_s and results.get(p, {}).get("output_tok_per_s") else "—" for p in PEERS]
    tpot = r.get("tpot_p50_s")
    cells = [f"[{i}]({link})", system, report["device"]["name"],
             m["name"] + (" (random)" if m.get("random_weights") else ""),
             _DTYPES.get(m["dtype"], m["dtype"]),
             f"{report['workload']['name']} ({report['workload']['num_requests']} req)",
             _versions(report["versions"]),
             _num(tok_s) if "error" not in r else f"failed: {r['error'].split(':')[0]}", *ratios,
             _num(r.get("floor_fraction")), _num(r.get("ttft_p50_s"), " s"),
             _num(_ms(tpot), " ms"), notes(r)]
    return "| " + " | ".join(cells) + " |"


def render_section(reports: list[tuple[Path, dict]], readme: Path, plot: Path,
                   others: list[tuple[Path, dict]] = ()) -> str:
    """The markdown between the markers: the serving table, the command behind each run, the plot,
    then every other benchmark's report with its command."""
    rel = lambda p: Path(os.path.relpath(p, readme.parent)).as_posix()    # noqa: E731
    lines = [START, "<!-- generated by `python -m course_lib report` from data/results/*.json -->", "",
             "| run | system | device | model | dtype | workload | torch / transformers / triton "
             "| out tok/s | x hf-static | x hf-cb | floor fraction | TTFT p50 | TPOT p50 | notes |",
             "|---|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for i, (path, report) in enumerate(reports, 1):
        lines += [_row(i, rel(path), report, s, report["results"][s])
                  for s in sorted(report["results"], key=_rank)]
    lines += ["", "Each run's command (numbers as in the `run` column):", ""]
    lines += [f"{i}. `{path.name}`: `{report['command'] or 'not recorded'}`"
              for i, (path, report) in enumerate(reports, 1)]
    lines += ["", f"![Output tokens/s of each system in each run, log scale]({rel(plot)})"]
    if others:
        lines += ["", "Other recorded benchmarks (`python -m course_lib bench <benchmark>`; the notebooks "
                      "named in data/results/README.md plot them):", "",
                  "| file | benchmark | device | torch / transformers / triton | command |", "|---|---|---|---|---|"]
        lines += [f"| [{p.name}]({rel(p)}) | {r['benchmark']} | {r['device']['name']} | {_versions(r['versions'])} "
                  f"| `{r['command'] or 'not recorded'}` |" for p, r in others]
    return "\n".join([*lines, END])


def replace_section(text: str, section: str) -> str:
    """``text`` with everything from START to END (markers included) replaced by ``section``."""
    a, b = text.find(START), text.find(END)
    if a < 0 or b < a:
        raise ValueError(f"README must contain {START} and then {END}")
    return text[:a] + section + text[b + len(END):]


def _rank(system: str) -> int:
    return ORDER.index(system) if system in ORDER else len(ORDER)


def perf_figure(reports: list[tuple[Path, dict]]):
    """Grouped bars: output tok/s (log scale) of each system, one group per run, one colour per
    system; a partial run's bar is hatched."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    seen = {s for _, rep in reports for s in rep["results"]}
    colors = {s: f"C{i}" for i, s in enumerate([*ORDER, *sorted(seen - set(ORDER))])}
    fig, ax = plt.subplots(figsize=(max(6.0, 2.4 * len(reports)), 4))
    width, labelled = 0.8 / max(1, max(len(rep["results"]) for _, rep in reports)), set()
    for i, (_, rep) in enumerate(reports):
        done = sorted(((s, r) for s, r in rep["results"].items() if "output_tok_per_s" in r),
                      key=lambda sr: _rank(sr[0]))
        for j, (system, r) in enumerate(done):        # centred on the group, whatever ran
            bar = ax.bar(i + (j - (len(done) - 1) / 2) * width, r["output_tok_per_s"], width,
                         color=colors[system], hatch="//" if "partial" in r else None,
                         label=None if system in labelled else system)
            ax.bar_label(bar, [_num(r["output_tok_per_s"])], fontsize=7)
            labelled.add(system)
    ax.set_xticks(range(len(reports)),
                  [f"[{i}] {rep['model']['name']}\n{rep['device']['name'].removeprefix('NVIDIA ').split(' (')[0]}"
                   for i, (_, rep) in enumerate(reports, 1)], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(top=ax.get_ylim()[1] * 2)         # room for the labels above the tallest bar
    ax.set_ylabel("output tokens/s (log scale; hatched: partial run)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def run_report(results_dir=ROOT / "data/results", readme=ROOT / "README.md", check: bool = False,
               plot: bool = True, log=print) -> int:
    """Rewrite (or with ``check`` compare) the README section; 0 if it is current, 1 if stale."""
    results_dir, readme = Path(results_dir), Path(readme)
    every = load_reports(results_dir, None)
    reports = [(p, r) for p, r in every if r["benchmark"] == "serving"]
    others = [(p, r) for p, r in every if r["benchmark"] != "serving"]
    png = results_dir / "perf.png"
    old = readme.read_text()
    new = replace_section(old, render_section(reports, readme, png, others))
    if check:
        if new == old and (png.exists() or not reports):
            return 0
        diff = difflib.unified_diff(old.splitlines(), new.splitlines(), str(readme), "generated", lineterm="")
        log("\n".join(diff) or f"{png} is missing")
        log(f"{readme}'s performance section is stale: run `python -m course_lib report`")
        return 1
    readme.write_text(new)
    if plot and reports:
        perf_figure(reports).savefig(png, dpi=120, metadata={"Software": None})
    log(f"{readme}: {sum(len(r['results']) for _, r in reports)} rows from {len(reports)} serving "
        f"reports and {len(others)} others in {results_dir}" + (f"; plot in {png}" if plot and reports else ""))
    return 0


def add_report_parser(sub) -> None:
    """The ``report`` sub-command's flags (registered by course_lib/__main__.py)."""
    r = sub.add_parser("report", help="README performance table + data/results/perf.png from the reports")
    r.add_argument("--results-dir", default=str(ROOT / "data/results"), help="where the report files are")
    r.add_argument("--readme", default=str(ROOT / "README.md"),
                   help=f"the file whose {START} ... {END} section is rewritten")
    r.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 if the README section differs from what would be generated")
    r.add_argument("--no-plot", action="store_true", help="do not redraw perf.png")
    r.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    try:
        return run_report(args.results_dir, args.readme, args.check, not args.no_plot)
    except (ValueError, FileNotFoundError) as e:     # no markers, no README: one line, exit code 2
        print(f"error: {e}", file=sys.stderr)
        return 2
