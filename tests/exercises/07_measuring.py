"""Plausible wrong versions of notebook 07's exercise (a percentile, and TTFT / TPOT / ITL / goodput
from raw timestamps). tests/test_exercises.py runs the notebook's check cells against each and
requires an AssertionError."""

_LOAD = '''def load_metrics(arrivals, token_times, duration_s, slo_ttft_s, slo_tpot_s):
    ttft, tpot, itl = [], [], []
    for a, t in zip(arrivals, token_times):
        ttft.append({ttft})
        tpot.append({tpot})
        {itl}
    good = sum(1 for f, p in zip(ttft, tpot) if {good})
    return {{"ttft": ttft, "tpot": tpot, "itl": itl, "goodput": {goodput}}}'''

_RIGHT = dict(ttft="t[0] - a",
              tpot="(t[-1] - t[0]) / (len(t) - 1) if len(t) > 1 else None",
              itl="itl += [later - earlier for earlier, later in zip(t, t[1:])]",
              good="f <= slo_ttft_s and (p or 0.0) <= slo_tpot_s",
              goodput="good / duration_s")


def _load(**wrong) -> str:
    return _LOAD.format(**(_RIGHT | wrong))


_PCT = '''def percentile(values, q):
    x = {x}
    h = {h}
    lo = math.floor(h)
    hi = min(lo + 1, len(x) - 1)
    return {ret}'''


def _pct(x="sorted(values)", h="(len(x) - 1) * q / 100", ret="x[lo] + (h - lo) * (x[hi] - x[lo])") -> str:
    return _PCT.format(x=x, h=h, ret=ret)


VARIANTS = {
    "load_metrics": {
        # TTFT from the first *scheduled* moment is not available here; the plausible slip is the time
        # from arrival to the *last* token (that is E2E)
        "ttft_is_e2e": _load(ttft="t[-1] - a"),
        # the first token counted in TPOT: (E2E) / n
        "tpot_includes_first_token": _load(tpot="(t[-1] - a) / len(t)"),
        # right span, wrong count: n gaps instead of n - 1
        "tpot_divides_by_n": _load(tpot="(t[-1] - t[0]) / len(t) if len(t) > 1 else None"),
        # a 1-token request given TPOT 0 instead of None (it would pull the TPOT percentiles down)
        "tpot_zero_for_one_token": _load(tpot="(t[-1] - t[0]) / (len(t) - 1) if len(t) > 1 else 0.0"),
        # ITL averaged per request, then pooled: every request counts once, not every gap
        "itl_per_request_mean": _load(itl="itl += [(t[-1] - t[0]) / (len(t) - 1)] if len(t) > 1 else []"),
        # the first "gap" measured from the arrival: TTFT leaks into ITL
        "itl_from_arrival": _load(itl="itl += [later - earlier for earlier, later in zip([a] + t, t)]"),
        # goodput counting only one of the two SLOs
        "goodput_ttft_only": _load(good="f <= slo_ttft_s"),
        "goodput_tpot_only": _load(good="(p or 0.0) <= slo_tpot_s"),
        # a value exactly at its SLO counted as a miss
        "goodput_strict": _load(good="f < slo_ttft_s and (p or 0.0) < slo_tpot_s"),
        # 1-token requests (no TPOT) never counted as good
        "goodput_drops_one_token": _load(good="f <= slo_ttft_s and p is not None and p <= slo_tpot_s"),
        # a fraction of requests, not a rate
        "goodput_is_a_fraction": _load(goodput="good / len(ttft)"),
    },
    "percentile": {
        # off by one: h = n q / 100 (clamped so it does not index past the end)
        "off_by_one": _pct(h="min(len(x) * q / 100, len(x) - 1)"),
        # nearest rank (another textbook definition, not numpy's / vLLM's)
        "nearest_rank": _pct(ret="x[max(0, math.ceil(len(x) * q / 100) - 1)]"),
        # no interpolation: the lower neighbour
        "lower": _pct(ret="x[lo]"),
        # forgot to sort
        "unsorted": _pct(x="list(values)"),
    },
}
