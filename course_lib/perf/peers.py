"""What learners would otherwise use, measured on the same workload: HF transformers ``generate`` on
padded static batches (the baseline of vLLM's and Anyscale's studies) and transformers' own continuous
batching (``generate_batch`` machinery, attention ``paged|sdpa``).

The HF peers are slow (transformers ``generate`` on padded batches of 128 took 228 s for the 256
nanovllm requests on an H200), so bench's ``hf_num_requests`` can run them on the first N requests of
the same workload. Where that is a fair estimate and where it is not:

- hf-static, tokens/s: fair. Requests are independent draws and static batching runs batch after batch
  with the same statistics (each batch lasts as long as its longest prompt and output, for 128 uniform
  draws in [100, 1024] nearly always ~1,000), so whole batches of the sample (N a multiple of the batch
  size) estimate the full run's tokens/s.
- hf-cb, tokens/s: an underestimate. It never holds more than N requests at once, and the tail, where
  finished requests leave and fewer remain, is a larger share of a short run; the smaller N, the lower
  (so the engine's ratio to hf-cb is overstated). Prefer the largest N the time allows.
- Latencies (TTFT, end-to-end) of a sample are not those of the full run: there, later batches wait
  for earlier ones. Compare them only between runs on the same requests.

The JSON records N per system (``num_requests``, ``sample_of``), and every figure of a sampled system
(floor included) is for its N requests.
"""
from __future__ import annotations

import time

import torch

from .metrics import RequestTiming
from .workloads import Workload


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


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


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


@torch.inference_mode()
def run_hf_static(model, workload: Workload, batch_size: int, *, deadline: float | None = None
                  ) -> tuple[list[RequestTiming], float]:
    """Requests in arrival order, ``batch_size`` at a time, left-padded; each batch generates until its
    longest request is done (min_new_tokens forces the length: EOS is ignored as in the engine runs).

    ``deadline`` (a time.perf_counter() value) is a time guard: a batch it interrupts is dropped and
    no later batch starts, so the result covers whole batches only (the first N requests, N a multiple
    of ``batch_size``); TimeoutError if not even the first batch finished."""
    from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList
    device = model.device
    timings, t0, end = [], time.perf_counter(), None
    reqs = workload.requests
    for i in range(0, len(reqs), batch_size):
        if deadline is not None and timings and time.perf_counter() > deadline:
            break
        batch = reqs[i:i + batch_size]
        width, new = max(len(r.prompt_token_ids) for r in batch), max(r.max_tokens for r in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for row, r in enumerate(batch):                      # left padding: prompts end together
            ids[row, width - len(r.prompt_token_ids):] = torch.tensor(r.prompt_token_ids)
            mask[row, width - len(r.prompt_token_ids):] = 1
        clock = _FirstStepClock()
        cfg = GenerationConfig(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
        stop = StoppingCriteriaList([_StopAt(deadline)] if deadline is not None else [])
        out = model.generate(ids.to(device), attention_mask=mask.to(device), generation_config=cfg,
                             logits_processor=LogitsProcessorList([clock]), stopping_criteria=stop)
        _sync(device)
        made = out.shape[1] - width            # tokens generated per row, padding work included
        if deadline is not None and made < new:   # only the guard stops a batch early (min_new_tokens)
            break                                  # drop the cut batch: keep whole batches only
        end = time.perf_counter()
        timings += [RequestTiming(t0, clock.t, end, min(made, r.max_tokens)) for r in batch]
    if end is None:
        raise TimeoutError(f"hf-static: the time guard ended the run before its first batch of "
                           f"{min(batch_size, len(reqs))} requests finished")
    return timings, end - t0


def run_hf_cb(model, workload: Workload, *, deadline: float | None = None
              ) -> tuple[list[RequestTiming], float]:
    """transformers' continuous batching manager, one request per workload entry, EOS disabled.

    ``deadline`` (a time.perf_counter() value) is a time guard: when it passes, the unfinished
    requests are cancelled and TimeoutError says how many had finished (a partial continuous run
    has no fair throughput: the requests still running hold most of the tokens).
    Not under inference_mode: the manager's worker thread updates tensors in place, which fails on
    inference tensors created by this thread."""
    from transformers import GenerationConfig
    if not hasattr(model, "continuous_batching_context_manager"):
        raise RuntimeError("this transformers version has no continuous batching")
    n = len(workload.requests)
    cfg = GenerationConfig(max_new_tokens=max(r.max_tokens for r in workload.requests), do_sample=False,
                           pad_token_id=0, eos_token_id=-1)
    timings: dict[str, RequestTiming] = {}
    with model.continuous_batching_context_manager(generation_config=cfg, block=True, timeout=30) as mgr:
        t0 = time.perf_counter()
        for i, r in enumerate(workload.requests):
            mgr.add_request(r.prompt_token_ids, request_id=str(i), max_new_tokens=r.max_tokens,
                            record_timestamps=True, eos_token_id=-1)
        while len(timings) < n:
            left = None if deadline is None else deadline - time.perf_counter()
            if left is not None and left <= 0:
                _cancel_rest(mgr, [str(i) for i in range(n) if str(i) not in timings])
                raise TimeoutError(f"hf-cb: only {len(timings)} of {n} requests finished within the "
                                   f"time guard ({time.perf_counter() - t0:.0f} s)")
            res = mgr.get_result(timeout=60 if left is None else min(60.0, max(left, 0.1)))
            if res is None:
                if not mgr.is_running():
                    raise RuntimeError("transformers' continuous batching thread stopped")
                continue
            if res.is_finished():
                if res.error:
                    raise RuntimeError(f"hf-cb request failed: {res.error}")
                first = res.timestamps[0] if res.timestamps else None
                timings[res.request_id] = RequestTiming(t0, first, time.perf_counter(),
                                                        len(res.generated_tokens))
        wall = time.perf_counter() - t0
    return [timings[str(i)] for i in range(n)], wall


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


def run_peer(system: str, model, workload: Workload, batch_size: int, deadline: float | None = None
             ) -> tuple[list[RequestTiming], float]:
    """``hf-static`` (padded batches of ``batch_size``) or ``hf-cb`` on ``workload``."""
    if system == "hf-static":
        return run_hf_static(model, workload, batch_size, deadline=deadline)
    if system == "hf-cb":
        return run_hf_cb(model, workload, deadline=deadline)
    raise ValueError(f"system must be 'hf-static' or 'hf-cb', got {system!r}")
