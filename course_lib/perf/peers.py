"""What learners would otherwise use, measured on the same workload: HF transformers ``generate`` on
padded static batches (the baseline of vLLM's and Anyscale's studies) and transformers' own continuous
batching (``generate_batch`` machinery, attention ``paged|sdpa``)."""
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


@torch.inference_mode()
def run_hf_static(model, workload: Workload, batch_size: int) -> tuple[list[RequestTiming], float]:
    """Requests in arrival order, ``batch_size`` at a time, left-padded; each batch generates until its
    longest request is done (min_new_tokens forces the length: EOS is ignored as in the engine runs)."""
    from transformers import GenerationConfig, LogitsProcessorList
    device = model.device
    timings, t0 = [], time.perf_counter()
    reqs = workload.requests
    for i in range(0, len(reqs), batch_size):
        batch = reqs[i:i + batch_size]
        width, new = max(len(r.prompt_token_ids) for r in batch), max(r.max_tokens for r in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width, dtype=torch.long)
        for row, r in enumerate(batch):                      # left padding: prompts end together
            ids[row, width - len(r.prompt_token_ids):] = torch.tensor(r.prompt_token_ids)
            mask[row, width - len(r.prompt_token_ids):] = 1
        clock = _FirstStepClock()
        cfg = GenerationConfig(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
        out = model.generate(ids.to(device), attention_mask=mask.to(device), generation_config=cfg,
                             logits_processor=LogitsProcessorList([clock]))
        _sync(device)
        end = time.perf_counter()
        made = out.shape[1] - width            # tokens generated per row, padding work included
        timings += [RequestTiming(t0, clock.t, end, min(made, r.max_tokens)) for r in batch]
    return timings, time.perf_counter() - t0


def run_hf_cb(model, workload: Workload, max_batch_tokens: int | None = None
              ) -> tuple[list[RequestTiming], float]:
    """transformers' continuous batching manager, one request per workload entry, EOS disabled.

    Not under inference_mode: the manager's worker thread updates tensors in place, which fails on
    inference tensors created by this thread."""
    from transformers import GenerationConfig
    if not hasattr(model, "continuous_batching_context_manager"):
        raise RuntimeError("this transformers version has no continuous batching")
    cfg = GenerationConfig(max_new_tokens=max(r.max_tokens for r in workload.requests), do_sample=False,
                           pad_token_id=0, eos_token_id=-1)
    timings: dict[str, RequestTiming] = {}
    with model.continuous_batching_context_manager(generation_config=cfg, block=True, timeout=30) as mgr:
        t0 = time.perf_counter()
        for i, r in enumerate(workload.requests):
            mgr.add_request(r.prompt_token_ids, request_id=str(i), max_new_tokens=r.max_tokens,
                            record_timestamps=True, eos_token_id=-1)
        while len(timings) < len(workload.requests):
            res = mgr.get_result(timeout=60)
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
    return [timings[str(i)] for i in range(len(workload.requests))], wall
