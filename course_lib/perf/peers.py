"""What learners would otherwise use, measured on the same workload, always reported:

- ``hf-static``: HF transformers ``generate`` on left-padded static batches (the baseline of vLLM's
  and Anyscale's studies), default (dynamic) cache, eager.
- ``hf-static-compile``: the same batches through transformers' own fast path, the static cache with
  torch.compile. In transformers 5 ``generate(cache_implementation="static")`` compiles the decode
  forward itself on CUDA (``get_compiled_call``, CompileConfig's defaults: inductor,
  "reduce-overhead", i.e. CUDA graphs; the prefill stays eager), so that is how it is set up here
  rather than also wrapping ``model.forward`` in torch.compile (two nested compilations). Prompts
  are left-padded to a multiple of 64 and lengths rounded up too (transformers' advice: fewer shapes,
  fewer recompilations); every distinct shape is compiled before the clock starts (``compile_s``
  says how long that took). Whether it really compiled is recorded, not assumed: graphs captured
  and graph breaks (torch._dynamo's counters), and at batch 1 the ms per token eager vs compiled.
- ``hf-cb``: transformers' own continuous batching (``continuous_batching_context_manager``).

The HF peers are slow (transformers ``generate`` on padded batches of 128 took 228 s for the 256
nanovllm requests on an H200), so the serving bench's ``hf_num_requests`` runs them on the first N
requests of the same workload. Where that is a fair estimate and where it is not:

- hf-static, tokens/s: fair. Requests are independent draws and static batching runs batch after batch
  with the same statistics (each batch lasts as long as its longest prompt and output, for 128 uniform
  draws in [100, 1024] nearly always ~1,000), so whole batches of the sample (N a multiple of the batch
  size) estimate the full run's tokens/s. A time guard keeps whole batches only.
- hf-cb, tokens/s: an underestimate. It never holds more than N requests at once, and the tail, where
  finished requests leave and fewer remain, is a larger share of a short run; the smaller N, the lower
  (so the engine's ratio to hf-cb is overstated). When its time guard passes, the requests still
  running are cancelled and the run is reported *partial*: its tokens/s are every token generated
  until the guard (the requests are streamed, so the unfinished ones' tokens are counted too) over
  that time; its latencies are the finished requests'; ``partial`` holds the counts (finished,
  submitted, guard_s, unfinished_tokens). Streaming copies each running request's token list every
  step inside transformers' loop: ~0.5 ms of its ~70 ms steps at 32 requests on an H200.
- Latencies (TTFT, end-to-end) of a sample are not those of the full run: there, later batches wait
  for earlier ones. Compare them only between runs on the same requests.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from .metrics import RequestTiming
from .timers import sync
from .workloads import Workload

# How hf-static-compile compiles, per device type. CUDA: what transformers' generate does by itself
# with a static cache (CompileConfig()). CPU: transformers never auto-compiles there, so the peer
# forces it (CompileConfig._compile_all_devices, transformers' own switch for that) with inductor's
# default mode (no CUDA graphs on a CPU). Tests swap in backend="eager" (dynamo only, seconds).
COMPILE = {"cuda": dict(), "cpu": dict(mode="default")}
PAD_TO = 64                        # hf-static-compile: prompt widths and lengths rounded up to this
BATCH1_TOKENS = 64                 # hf-static-compile's batch-1 check: prompt and output tokens


@dataclass
class PeerResult:
    """One peer's run: the timings of the requests it served (``served``: their workload indices)
    and the figures it adds to its row (``partial``, ``compile``, ``batch1``)."""
    timings: list[RequestTiming]
    wall_s: float
    served: list[int]
    figures: dict = field(default_factory=dict)


def build_hf_model(hf_config_or_folder, device, dtype):
    """A transformers model: from a folder (real weights) or from a config dict (random weights)."""
    from transformers import AutoConfig, AutoModelForCausalLM
    if isinstance(hf_config_or_folder, dict):
        d = dict(hf_config_or_folder)
        config = AutoConfig.for_model(d.pop("model_type"), **d)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(hf_config_or_folder, dtype=dtype).to(device)
    return model.eval()


class _FirstStepClock:
    """A logits processor that only notes when generate produced its first logits (end of prefill)."""
    def __init__(self):
        self.t = None

    def __call__(self, input_ids, scores):
        if self.t is None:
            self.t = time.perf_counter()
        return scores


class _StopAt:
    """A stopping criterion that ends generation for every row once ``deadline`` (perf_counter) passes."""
    def __init__(self, deadline: float):
        self.deadline = deadline

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), time.perf_counter() > self.deadline, dtype=torch.bool,
                          device=input_ids.device)


class _StopAfter:
    """A stopping criterion that ends generation once the rows are ``length`` tokens long (a padded
    max_new_tokens sizes the static cache; this stops at the batch's real length)."""
    def __init__(self, length: int):
        self.length = length

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), input_ids.shape[1] >= self.length, dtype=torch.bool,
                          device=input_ids.device)


def _round_up(n: int, to: int) -> int:
    return -(-n // to) * to


def _batches(workload: Workload, batch_size: int, pad_to: int = 1):
    """(requests, ids, mask, width, new, new_rounded) per static batch, prompts left-padded to the
    longest (rounded up to ``pad_to``) so that they end together."""
    reqs = workload.requests
    for i in range(0, len(reqs), batch_size):
        batch = reqs[i:i + batch_size]
        width = _round_up(max(len(r.prompt_token_ids) for r in batch), pad_to)
        new = max(r.max_tokens for r in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for row, r in enumerate(batch):                      # left padding: prompts end together
            ids[row, width - len(r.prompt_token_ids):] = torch.tensor(r.prompt_token_ids)
            mask[row, width - len(r.prompt_token_ids):] = 1
        yield batch, ids, mask, width, new, _round_up(new, pad_to)


def _generation_config(new: int, new_rounded: int, compile_config=None):
    """Greedy, ``new`` tokens forced (min_new_tokens: a random model's EOS must not end a row early);
    with ``compile_config``, the static cache sized for ``new_rounded`` and compiled decoding."""
    from transformers import GenerationConfig
    if compile_config is None:
        return GenerationConfig(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
    return GenerationConfig(max_new_tokens=new_rounded, min_new_tokens=new, do_sample=False, pad_token_id=0,
                            cache_implementation="static", compile_config=compile_config)


@torch.inference_mode()
def run_hf_static(model, workload: Workload, batch_size: int, *, deadline: float | None = None,
                  compile_config=None, on_batch=None) -> tuple[list[RequestTiming], float]:
    """Requests in arrival order, ``batch_size`` at a time, left-padded; each batch generates until its
    longest request is done (EOS is ignored as in the engine runs). ``compile_config``: the static
    cache + torch.compile (hf-static-compile; see the module docstring); ``on_batch(n)`` is called
    after each batch of n requests (progress).

    ``deadline`` (a time.perf_counter() value) is a time guard: a batch it interrupts is dropped and
    no later batch starts, so the result covers whole batches only (the first N requests, N a multiple
    of ``batch_size``); TimeoutError if not even the first batch finished."""
    from transformers import LogitsProcessorList, StoppingCriteriaList
    device = model.device
    timings, t0, end = [], time.perf_counter(), None
    pad_to = PAD_TO if compile_config is not None else 1
    for batch, ids, mask, width, new, new_rounded in _batches(workload, batch_size, pad_to):
        if deadline is not None and timings and time.perf_counter() > deadline:
            break
        clock = _FirstStepClock()
        stops = [_StopAt(deadline)] if deadline is not None else []
        stops += [_StopAfter(width + new)] if new_rounded > new and compile_config is not None else []
        out = model.generate(ids.to(device), attention_mask=mask.to(device),
                             generation_config=_generation_config(new, new_rounded, compile_config),
                             logits_processor=LogitsProcessorList([clock]),
                             stopping_criteria=StoppingCriteriaList(stops))
        sync(device)
        made = out.shape[1] - width            # tokens generated per row, padding work included
        if deadline is not None and made < new:   # only the guard stops a batch early (min_new_tokens)
            break                                  # drop the cut batch: keep whole batches only
        end = time.perf_counter()
        timings += [RequestTiming(t0, clock.t, end, min(made, r.max_tokens)) for r in batch]
        if on_batch is not None:
            on_batch(len(batch))
    if end is None:
        raise TimeoutError(f"hf-static: the time guard ended the run before its first batch of "
                           f"{min(batch_size, len(workload.requests))} requests finished")
    return timings, end - t0


def compile_config_for(device):
    """The CompileConfig hf-static-compile uses on ``device`` (COMPILE above)."""
    from transformers import CompileConfig
    kind = torch.device(device).type
    cfg = CompileConfig(**COMPILE.get(kind, COMPILE["cpu"]))
    if kind != "cuda":
        cfg._compile_all_devices = True         # transformers' switch: compile off-GPU too
    return cfg


def _dynamo_counts() -> dict:
    """torch._dynamo's running totals: graphs captured, graph breaks (both only ever grow)."""
    from torch._dynamo.utils import counters
    return dict(graphs=counters["stats"]["unique_graphs"], graph_breaks=sum(counters["graph_break"].values()))


@torch.inference_mode()
def batch1_ms_per_token(model, prompt: list[int], new: int, compile_config=None) -> float:
    """Decode ms per token of one request (after its prefill): eager with the default cache, or with
    ``compile_config`` static + compiled (called once untimed first, so compilation is not timed)."""
    from transformers import LogitsProcessorList
    ids = torch.tensor([prompt], device=model.device)
    cfg = _generation_config(new, new, compile_config)
    for _ in range(2 if compile_config is not None else 1):     # the last call is the timed one
        clock = _FirstStepClock()
        sync(model.device)
        model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=cfg,
                       logits_processor=LogitsProcessorList([clock]))
        sync(model.device)
        end = time.perf_counter()
    return (end - clock.t) / (new - 1) * 1e3


def run_hf_static_compile(model, workload: Workload, batch_size: int, *, deadline: float | None = None,
                          on_batch=None) -> PeerResult:
    """hf-static-compile: the batch-1 check (eager vs compiled ms per token), then every distinct
    padded-batch shape compiled (untimed), then run_hf_static with the static cache and compile.
    Afterwards the compiled code and its CUDA-graph memory are dropped (torch._dynamo.reset), so the
    next peer gets the memory back."""
    try:
        return _static_compile(model, workload, batch_size, deadline, on_batch)
    finally:
        model.__dict__.pop("_compiled_call", None)
        torch._dynamo.reset()


def _static_compile(model, workload: Workload, batch_size: int, deadline, on_batch) -> PeerResult:
    from transformers import StoppingCriteriaList
    cc = compile_config_for(model.device)
    before = _dynamo_counts()
    first = workload.requests[0].prompt_token_ids
    prompt = (first * (BATCH1_TOKENS // len(first) + 1))[:BATCH1_TOKENS]
    eager = batch1_ms_per_token(model, prompt, BATCH1_TOKENS)
    compiled = batch1_ms_per_token(model, prompt, BATCH1_TOKENS, cc)
    t = time.perf_counter()
    shapes = {(len(b), w, n, nr): (ids, mask) for b, ids, mask, w, n, nr in _batches(workload, batch_size, PAD_TO)}
    # 8 decode steps per shape: inductor's CUDA graphs are recorded on a later call than the first
    with torch.inference_mode():
        for (_, width, new, new_rounded), (ids, mask) in shapes.items():   # compile each shape, untimed
            if deadline is not None and time.perf_counter() > deadline:
                raise TimeoutError("hf-static-compile: the time guard passed while compiling")
            model.generate(ids.to(model.device), attention_mask=mask.to(model.device),
                           generation_config=_generation_config(new, new_rounded, cc),
                           stopping_criteria=StoppingCriteriaList([_StopAfter(width + 8)]))
    sync(model.device)
    compile_s, warm = time.perf_counter() - t, _dynamo_counts()
    timings, wall = run_hf_static(model, workload, batch_size, deadline=deadline, compile_config=cc,
                                  on_batch=on_batch)
    after = _dynamo_counts()
    graphs = warm["graphs"] - before["graphs"]
    figures = dict(compile=dict(config={k: v for k, v in cc.to_dict().items() if v is not None},
                                shapes=len(shapes), compile_s=compile_s, graphs=graphs,
                                graph_breaks=warm["graph_breaks"] - before["graph_breaks"],
                                graphs_during_timed_run=after["graphs"] - warm["graphs"],
                                compiled=graphs > 0),
                   batch1=dict(prompt_tokens=len(prompt), output_tokens=BATCH1_TOKENS,
                               ms_per_token_eager=eager, ms_per_token_compiled=compiled,
                               speedup=eager / compiled))
    return PeerResult(timings, wall, list(range(len(timings))), figures)


def cb_config_for(model, workload: Workload):
    """None on a GPU (transformers sizes its paged cache from free memory, as a user gets it). On a
    CPU that default takes 90% of the host's free RAM and warms up at the largest sizes (a minute
    for a 2-layer model); this sizes the cache to the workload instead."""
    if model.device.type == "cuda":
        return None
    from transformers import ContinuousBatchingConfig
    page = 64
    blocks = sum(math.ceil((len(r.prompt_token_ids) + r.max_tokens) / page) for r in workload.requests) + 8
    longest = max(len(r.prompt_token_ids) for r in workload.requests)
    return ContinuousBatchingConfig(page_size=page, num_blocks=blocks, max_batch_tokens=max(512, longest + 16))


def run_hf_cb(model, workload: Workload, *, deadline: float | None = None, on_finish=None,
              cb_config=None) -> PeerResult:
    """transformers' continuous batching manager, one request per workload entry, EOS disabled;
    ``on_finish()`` after each finished request (progress).

    ``deadline`` (a time.perf_counter() value) is a time guard: when it passes, the unfinished
    requests are cancelled and the result is partial (the finished requests, ``figures["partial"]``
    with the counts and the tokens the unfinished ones had generated); TimeoutError only if none had
    finished.
    Not under inference_mode: the manager's worker thread updates tensors in place, which fails on
    inference tensors created by this thread."""
    from transformers import GenerationConfig
    if not hasattr(model, "continuous_batching_context_manager"):
        raise RuntimeError("this transformers version has no continuous batching")
    n = len(workload.requests)
    cfg = GenerationConfig(max_new_tokens=max(r.max_tokens for r in workload.requests), do_sample=False,
                           pad_token_id=0, eos_token_id=-1)
    extra = {} if cb_config is None else dict(continuous_batching_config=cb_config)
    timings: dict[int, RequestTiming] = {}
    cut, so_far = None, {}                 # so_far: tokens each unfinished request has streamed
    with model.continuous_batching_context_manager(generation_config=cfg, block=True, timeout=30, **extra) as mgr:
        t0 = time.perf_counter()
        for i, r in enumerate(workload.requests):
            mgr.add_request(r.prompt_token_ids, request_id=str(i), max_new_tokens=r.max_tokens,
                            record_timestamps=True, eos_token_id=-1, streaming=True)
        while len(timings) < n:
            left = None if deadline is None else deadline - time.perf_counter()
            if left is not None and left <= 0:
                cut = time.perf_counter()
                _cancel_rest(mgr, [str(i) for i in range(n) if i not in timings])
                break
            res = mgr.get_result(timeout=60 if left is None else min(60.0, max(left, 0.05)))
            if res is None:
                if not mgr.is_running():
                    raise RuntimeError("transformers' continuous batching thread stopped")
                continue
            if not res.is_finished():
                so_far[int(res.request_id)] = len(res.generated_tokens)
            else:
                so_far.pop(int(res.request_id), None)
                if res.error:
                    raise RuntimeError(f"hf-cb request failed: {res.error}")
                first = res.timestamps[0] if res.timestamps else None
                timings[int(res.request_id)] = RequestTiming(t0, first, time.perf_counter(),
                                                             len(res.generated_tokens))
                if on_finish is not None:
                    on_finish()
        wall = (cut or time.perf_counter()) - t0
    if not timings:
        raise TimeoutError(f"hf-cb: none of {n} requests finished within the time guard ({wall:.0f} s)")
    served = sorted(timings)
    figures = {} if cut is None else dict(partial=dict(finished=len(served), submitted=n, guard_s=wall,
                                                       unfinished_tokens=sum(so_far.values())))
    return PeerResult([timings[i] for i in served], wall, served, figures)


def _cancel_rest(mgr, request_ids: list[str]) -> None:
    """Cancel what is still queued or running, so leaving the manager's context does not wait for it
    (the context flushes pending requests before it stops the worker thread)."""
    cancel = getattr(mgr, "cancel_request", None)
    for rid in request_ids if cancel else ():
        cancel(rid)
    try:
        mgr.stop(block=True, timeout=30, hard_stop=True)
    except TypeError:                   # an older manager without hard_stop: the cancels must do
        pass


def build_peer(model: str, random_weights: bool, device, dtype):
    """The transformers model for registry name ``model``: its shape with random weights, or its folder."""
    from ..models.registry import KNOWN_MODELS, resolve_model
    spec = (KNOWN_MODELS[model][0] if random_weights and model in KNOWN_MODELS
            else resolve_model(model).folder)
    return build_hf_model(spec, device, dtype)


PEERS = ("hf-static", "hf-static-compile", "hf-cb")


def run_peer(system: str, model, workload: Workload, batch_size: int, deadline: float | None = None,
             progress=None) -> PeerResult:
    """One of PEERS on ``workload`` (static ones in padded batches of ``batch_size``); ``progress``:
    a bar whose update(n) is called as requests finish."""
    step = None if progress is None else progress.update
    if system == "hf-static":
        timings, wall = run_hf_static(model, workload, batch_size, deadline=deadline, on_batch=step)
        return PeerResult(timings, wall, list(range(len(timings))))
    if system == "hf-static-compile":
        return run_hf_static_compile(model, workload, batch_size, deadline=deadline, on_batch=step)
    if system == "hf-cb":
        return run_hf_cb(model, workload, deadline=deadline, cb_config=cb_config_for(model, workload),
                         on_finish=None if step is None else (lambda: step(1)))
    raise ValueError(f"system must be one of {list(PEERS)}, got {system!r}")
