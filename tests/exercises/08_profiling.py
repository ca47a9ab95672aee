"""Plausible wrong versions of notebook 08's exercises (reading a trace: self time of nested events, and
the mean time per step of each phase). tests/test_exercises.py runs the notebook's check cells against
each and requires an AssertionError."""

_SELF_TIMES_TAIL = '''
    out = {}
    for e, c in zip(events, child_us):
        total, self_ = out.get(e["name"], (0.0, 0.0))
        out[e["name"]] = (total + e["dur"], self_ + e["dur"] - c)
    return out
'''

_BREAKDOWN_TAIL = '''
    n = len(steps)
    out = {"step": sum(s["dur"] for s in steps) / n / 1e3}
    out.update({p: us / n / 1e3 for p, us in total.items()})
    out["other"] = out["step"] - sum(out[p] for p in phases)
    return out
'''

VARIANTS = {
    "self_times": {
        # self = total: the "inclusive" column read as the "exclusive" one
        "self_is_total": '''def self_times(events):
    out = {}
    for e in events:
        total, self_ = out.get(e["name"], (0.0, 0.0))
        out[e["name"]] = (total + e["dur"], self_ + e["dur"])
    return out
''',
        # subtracts every descendant, not only direct children: a grandchild's time is taken off twice
        "all_descendants": '''def self_times(events):
    rows, child_us = {}, [0.0] * len(events)
    for i, e in enumerate(events):
        rows.setdefault((e["pid"], e["tid"]), []).append(i)
    for idx in rows.values():
        idx.sort(key=lambda i: (events[i]["ts"], -events[i]["dur"]))
        open_ = []
        for i in idx:
            while open_ and events[open_[-1]]["ts"] + events[open_[-1]]["dur"] <= events[i]["ts"]:
                open_.pop()
            for j in open_:
                child_us[j] += events[i]["dur"]
            open_.append(i)
''' + _SELF_TIMES_TAIL,
        # one stack for every thread: an event of another thread that overlaps in time becomes a child
        "threads_merged": '''def self_times(events):
    child_us = [0.0] * len(events)
    idx = sorted(range(len(events)), key=lambda i: (events[i]["ts"], -events[i]["dur"]))
    open_ = []
    for i in idx:
        while open_ and events[open_[-1]]["ts"] + events[open_[-1]]["dur"] <= events[i]["ts"]:
            open_.pop()
        if open_:
            child_us[open_[-1]] += events[i]["dur"]
        open_.append(i)
''' + _SELF_TIMES_TAIL,
        # sorted by start only: at equal starts a child listed first is taken for the parent
        "start_only_sort": '''def self_times(events):
    rows, child_us = {}, [0.0] * len(events)
    for i, e in enumerate(events):
        rows.setdefault((e["pid"], e["tid"]), []).append(i)
    for idx in rows.values():
        idx.sort(key=lambda i: events[i]["ts"])
        open_ = []
        for i in idx:
            while open_ and events[open_[-1]]["ts"] + events[open_[-1]]["dur"] <= events[i]["ts"]:
                open_.pop()
            if open_:
                child_us[open_[-1]] += events[i]["dur"]
            open_.append(i)
''' + _SELF_TIMES_TAIL,
        # reads "dur" as the end time: an event is closed once the next start passes its duration
        "dur_as_end": '''def self_times(events):
    rows, child_us = {}, [0.0] * len(events)
    for i, e in enumerate(events):
        rows.setdefault((e["pid"], e["tid"]), []).append(i)
    for idx in rows.values():
        idx.sort(key=lambda i: (events[i]["ts"], -events[i]["dur"]))
        open_ = []
        for i in idx:
            while open_ and events[open_[-1]]["dur"] <= events[i]["ts"]:
                open_.pop()
            if open_:
                child_us[open_[-1]] += events[i]["dur"]
            open_.append(i)
''' + _SELF_TIMES_TAIL,
    },
    "phase_breakdown": {
        # sums over all steps but never divides by their number: a total, not a mean per step
        "total_not_mean": '''def phase_breakdown(events, step_name, phases):
    steps = [e for e in events if e["name"] == step_name and e["cat"] == "user_annotation"]
    total = dict.fromkeys(phases, 0.0)
    for e in events:
        if e["cat"] != "user_annotation" or e["name"] not in total:
            continue
        for s in steps:
            if ((s["pid"], s["tid"]) == (e["pid"], e["tid"]) and s["ts"] <= e["ts"]
                    and e["ts"] + e["dur"] <= s["ts"] + s["dur"]):
                total[e["name"]] += e["dur"]
                break
    out = {"step": sum(s["dur"] for s in steps) / 1e3}
    out.update({p: us / 1e3 for p, us in total.items()})
    out["other"] = out["step"] - sum(out[p] for p in phases)
    return out
''',
        # every range with a phase's name counts, inside a step or not (the prefill step's too)
        "every_range_of_the_name": '''def phase_breakdown(events, step_name, phases):
    steps = [e for e in events if e["name"] == step_name and e["cat"] == "user_annotation"]
    total = dict.fromkeys(phases, 0.0)
    for e in events:
        if e["cat"] == "user_annotation" and e["name"] in total:
            total[e["name"]] += e["dur"]
''' + _BREAKDOWN_TAIL,
        # no category filter: the GPU rows' copies of the ranges count too, and a phase doubles
        "gpu_rows_too": '''def phase_breakdown(events, step_name, phases):
    steps = [e for e in events if e["name"] == step_name and e["cat"] == "user_annotation"]
    total = dict.fromkeys(phases, 0.0)
    for e in events:
        if e["name"] not in total:
            continue
        for s in steps:
            if s["ts"] <= e["ts"] and e["ts"] + e["dur"] <= s["ts"] + s["dur"]:
                total[e["name"]] += e["dur"]
                break
''' + _BREAKDOWN_TAIL,
        # a step measured as the span from its first phase to its last: "other" loses the glue around them
        "step_from_phase_span": '''def phase_breakdown(events, step_name, phases):
    steps = [e for e in events if e["name"] == step_name and e["cat"] == "user_annotation"]
    total, spans = dict.fromkeys(phases, 0.0), []
    for s in steps:
        mine = [e for e in events if e["cat"] == "user_annotation" and e["name"] in total
                and (s["pid"], s["tid"]) == (e["pid"], e["tid"]) and s["ts"] <= e["ts"]
                and e["ts"] + e["dur"] <= s["ts"] + s["dur"]]
        for e in mine:
            total[e["name"]] += e["dur"]
        spans.append(max(e["ts"] + e["dur"] for e in mine) - min(e["ts"] for e in mine))
    n = len(steps)
    out = {"step": sum(spans) / n / 1e3}
    out.update({p: us / n / 1e3 for p, us in total.items()})
    out["other"] = out["step"] - sum(out[p] for p in phases)
    return out
''',
        # "dur" compared with the step's end as if it were an end time: ranges after a step's start pass
        "dur_as_end": '''def phase_breakdown(events, step_name, phases):
    steps = [e for e in events if e["name"] == step_name and e["cat"] == "user_annotation"]
    total = dict.fromkeys(phases, 0.0)
    for e in events:
        if e["cat"] != "user_annotation" or e["name"] not in total:
            continue
        for s in steps:
            if ((s["pid"], s["tid"]) == (e["pid"], e["tid"]) and s["ts"] <= e["ts"]
                    and e["dur"] <= s["ts"] + s["dur"]):
                total[e["name"]] += e["dur"]
                break
''' + _BREAKDOWN_TAIL,
    },
}
