"""The floor of a whole workload: the shortest time any engine could serve it on a measured device.

The roofline of one step (roofline.py) applied to every step of an ideal iteration-level schedule:

- requests are admitted in order into ``max_num_seqs`` slots, each as soon as a slot frees (a request
  that finishes in step k frees its slot for step k + 1);
- a prompt of P tokens is prefilled in the step it is admitted, which also yields its first output
  token; each later step decodes one token, so a request of O output tokens runs for O steps;
- each step reads every matmul weight once, plus the K/V of every token each scheduled sequence
  attends over (the prompt for a prefill, the cache plus the new token for a decode), and does
  2*P_mm FLOPs per token computed plus causal attention (roofline.decoder_flops);
- a step takes max(bytes / bandwidth, FLOPs / matmul_rate); the floor is the sum over steps.

    step bytes = P_mm*w + kv_bytes_per_token(w) * sum_seqs(tokens attended)
    step FLOPs = 2*P_mm * sum_seqs(tokens computed) + 4*L*H*D * sum_seqs(keys seen by each query)

Left out, so the floor stays a lower bound: activation traffic (a fused engine keeps most of it on
chip), the token budget per step (splitting a compute-bound prefill changes nothing but the number
of weight reads), kernel launches, sampling and any host work.
"""
from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass

from ..config import ModelConfig
from .shapes import matmul_params


@dataclass(frozen=True)
class WorkloadFloor:
    """The floor and how it splits: bytes by kind, and how much of the time compute set."""
    floor_s: float
    steps: int
    weight_bytes: int             # P_mm * w per step, summed
    kv_bytes: int                 # K/V reads, summed
    flops: int
    compute_bound_steps: int      # steps where FLOPs / matmul_rate > bytes / bandwidth
    compute_bound_s: float        # the part of floor_s those steps take

    @property
    def bytes(self) -> int:
        return self.weight_bytes + self.kv_bytes

    def as_dict(self) -> dict:
        return {**asdict(self), "bytes": self.bytes}


def workload_floor(cfg: ModelConfig, requests: list[tuple[int, int]], dtype_bytes: int,
                   bandwidth: float, matmul_rate: float, max_num_seqs: int) -> WorkloadFloor:
    """Simulate the ideal schedule of ``requests`` (prompt length, output length) and sum the roofline.

    Args:
        cfg: the model shape. dtype_bytes: bytes per weight and per K/V element (2 for bf16).
        bandwidth: measured copy bandwidth, bytes/s. matmul_rate: measured dense matmul FLOP/s.
        max_num_seqs: batch slots.

    Worked example (the 1-layer TINY config of tests/test_perf.py: P_mm = 184 weights, K/V 8 bytes per
    token at w = 2, 4*L*H*D = 16), one request with a 3-token prompt and 2 output tokens, 100 B/s and
    1000 FLOP/s:

        step 1, prefill of 3:  bytes 184*2 + 3*8 = 392 -> 3.92 s;  FLOPs 2*184*3 + 16*(1+2+3) = 1200 -> 1.2 s
        step 2, decode at 3:   bytes 368 + 4*8   = 400 -> 4.00 s;  FLOPs 2*184 + 16*4 = 432 -> 0.43 s
        floor = 3.92 + 4.00 = 7.92 s over 2 steps, 792 bytes (736 weights + 56 K/V), 1632 FLOPs, no
        compute-bound step.
    """
    if max_num_seqs < 1:
        raise ValueError(f"max_num_seqs must be an integer >= 1, got {max_num_seqs!r}")
    bad = [r for r in requests if r[0] < 1 or r[1] < 1]
    if bad:
        raise ValueError(f"requests must be (prompt_len >= 1, output_len >= 1) pairs, got {bad[:3]}")
    weights = matmul_params(cfg)
    kv_per_token = cfg.kv_bytes_per_token(dtype_bytes)
    attn = 4 * cfg.num_layers * cfg.num_heads * cfg.head_dim   # FLOPs per (query, key) pair
    queue = deque(requests)
    running: list[tuple[int, int]] = []     # (tokens cached before this step, outputs still to make)
    steps = kv_tokens_total = flops_total = compute_steps = 0
    floor = compute_s = 0.0
    while queue or running:
        new = [queue.popleft() for _ in range(min(len(queue), max_num_seqs - len(running)))]
        # A decode at cache length c computes 1 token that attends over c + 1 keys; a prefill of p
        # computes p tokens, attends over p keys and its queries see 1 + 2 + ... + p keys in all.
        kv_tokens = sum(c + 1 for c, _ in running) + sum(p for p, _ in new)
        computed = len(running) + sum(p for p, _ in new)
        pairs = sum(c + 1 for c, _ in running) + sum(p * (p + 1) // 2 for p, _ in new)
        nbytes = weights * dtype_bytes + kv_per_token * kv_tokens
        flops = 2 * weights * computed + attn * pairs
        t_mem, t_compute = nbytes / bandwidth, flops / matmul_rate
        floor += max(t_mem, t_compute)
        if t_compute > t_mem:
            compute_steps += 1
            compute_s += t_compute
        steps += 1
        kv_tokens_total += kv_tokens
        flops_total += flops
        # After a prefill the prompt is cached and one output token exists (its K/V is written
        # when it is fed back in the next step); each decode caches one more token.
        running = ([(c + 1, left - 1) for c, left in running if left > 1]
                   + [(p, o - 1) for p, o in new if o > 1])
    return WorkloadFloor(floor, steps, steps * weights * dtype_bytes, kv_tokens_total * kv_per_token,
                         flops_total, compute_steps, compute_s)
