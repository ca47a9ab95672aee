"""CUDA graphs for decode steps (Day 14).

A decode step of a 0.6B model launches ~1,500 small kernels; from Python each launch costs a few
microseconds of CPU time, so at small and medium batch the GPU waits on the CPU. A CUDA graph records
the launches once and replays them with one call. Graphs have fixed shapes and fixed addresses, so:

- one graph per batch-size bucket (1, 2, 4, 8, 16, 32, 64, 128, ...); a batch of 5 runs the 8-graph
  with 3 padding rows;
- inputs live in static buffers that each step overwrites; padding rows write their K/V into the
  cache's scratch block and read one position of it, so they touch no real sequence;
- block tables are (max_batch, max_blocks_per_seq) so any context up to max_model_len fits.
"""
from __future__ import annotations

import torch

from ..kv.paged import PagedAttentionContext, PagedKVCache
from ..models.llama import LlamaModel
from .inputs import StepInputs, TokenFix, fill_rows

# The graph's per-row int64 inputs, packed side by side with seq_lens (int32) in one buffer so a step
# uploads them in one copy: each host-to-device copy costs the GPU a few microseconds however small,
# about as much as a kernel, and at batch 1 the whole step is ~1 ms. fix_rows/fix_src: TokenFix's index.
_LONGS = ("ids", "positions", "slots", "fix_rows", "fix_src")


def token_buckets(max_tokens: int) -> list[int]:
    """Mixed-step token buckets up to ``max_tokens``: powers of two from 16 to 512, then steps of
    half a power (768, 1024, 1536, 2048, ...): past 512 a step is compute-heavy enough that padding
    it to the next power of two would cost more than the launches saved. ``max_tokens`` itself is the
    last bucket."""
    out, t = [], 16
    while t < max_tokens:
        out.append(t)
        t = 2 * t if t < 512 else (t * 3 // 2 if t & (t - 1) == 0 else t * 4 // 3)
    return out + [max_tokens]


def buckets_for(max_batch: int) -> list[int]:
    out, b = [], 1
    while b < max_batch:
        out.append(b)
        b *= 2
    return out + [max_batch]


def _packed_views(raw: torch.Tensor, max_batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(len(_LONGS), max_batch) int64 and (max_batch,) int32 views of one flat uint8 buffer."""
    split = 8 * len(_LONGS) * max_batch
    return raw[:split].view(torch.int64).view(len(_LONGS), max_batch), raw[split:].view(torch.int32)


class DecodeGraphs:
    def __init__(self, model: LlamaModel, cache: PagedKVCache, attention_fn, max_batch: int,
                 max_blocks_per_seq: int):
        dev = model.device
        self.model, self.cache, self.attention_fn = model, cache, attention_fn
        self.buckets = buckets_for(max_batch)
        scratch = cache.scratch_block
        self.scratch_slot = scratch * cache.block_size
        nbytes = (8 * len(_LONGS) + 4) * max_batch
        self.packed = torch.zeros(nbytes, dtype=torch.uint8, device=dev)
        longs, self.seq_lens = _packed_views(self.packed, max_batch)
        self.ids, self.positions, self.slots, self.fix_rows, self.fix_src = longs
        self.slots.fill_(self.scratch_slot)
        self.seq_lens.fill_(1)
        self.tables = torch.full((max_batch, max_blocks_per_seq), scratch, dtype=torch.int32, device=dev)
        # Pinned staging, so the copies to the GPU are asynchronous, filled through numpy (~4x faster
        # than torch.tensor on a list of lists at batch 256). The block tables are staged as a
        # contiguous (b, width) array (a strided host source would be copied through pageable memory,
        # which waits for the GPU). Two sets, used in turn: under async scheduling the copies queued
        # by the previous step may not have run yet when this one fills its set; the ones before
        # it have (the engine waited for that step's tokens).
        self.host_packed = [torch.zeros(nbytes, dtype=torch.uint8, pin_memory=True) for _ in range(2)]
        self._host_views = [tuple(t.numpy() for t in _packed_views(h, max_batch)) for h in self.host_packed]
        self.host_tables = [torch.zeros(max_batch * max_blocks_per_seq, dtype=torch.int32,
                                        pin_memory=True) for _ in range(2)]
        self._turn = 0
        self.query_start_loc = torch.arange(max_batch + 1, dtype=torch.int32, device=dev)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.logits: dict[int, torch.Tensor] = {}
        self._capture_all()

    def _forward(self, b: int) -> torch.Tensor:
        ctx = PagedAttentionContext(self.cache, self.slots[:b], self.tables[:b], self.seq_lens[:b],
                                    self.query_start_loc[:b + 1], 1, self.attention_fn)
        hidden = self.model.hidden_states(self.ids[None, :b], self.positions[None, :b], ctx)[0]
        return self.model.lm_head(hidden)                                # (b, vocab)

    @torch.inference_mode()
    def _capture_all(self) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):          # warm-up (Triton compiles, cuBLAS picks kernels)
            for b in self.buckets:
                self._forward(b)
        torch.cuda.current_stream().wait_stream(side)
        pool = None
        for b in reversed(self.buckets):       # largest first: the smaller ones reuse its memory pool
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.logits[b] = self._forward(b)
            pool = graph.pool()
            self.graphs[b] = graph
        torch.cuda.synchronize()

    def bucket(self, batch: int) -> int | None:
        return next((b for b in self.buckets if b >= batch), None)

    def run(self, inp: StepInputs, fix: TokenFix | None = None) -> torch.Tensor:
        """Upload one decode step's inputs into the static buffers, replay, return logits (B, vocab).

        Two host-to-device copies (the packed per-row inputs, the block tables) and, under async
        scheduling, one device copy of the tokens still in flight (TokenFix)."""
        B = len(inp.ids)
        b = self.bucket(B)
        width = max(len(t) for t in inp.tables)
        self._turn ^= 1
        (ids, positions, slots, fix_rows, fix_src), seq_lens = self._host_views[self._turn]
        ids[:B], positions[:B], slots[:B], seq_lens[:B] = inp.ids, inp.positions, inp.slots, inp.seq_lens
        # padding rows (B..b) write their K/V into the scratch slot and read one position of it
        ids[B:b], positions[B:b], slots[B:b], seq_lens[B:b] = 0, 0, self.scratch_slot, 1
        staged = self.host_tables[self._turn][:b * width].view(b, width)
        tables = staged.numpy()
        fill_rows(tables, inp.tables)          # entries past a row's length are stale: never read
        tables[B:b, 0] = self.cache.scratch_block
        if fix is not None and not fix.in_place:
            fix_rows[:len(fix.rows)], fix_src[:len(fix.src)] = fix.rows, fix.src
        self.packed.copy_(self.host_packed[self._turn], non_blocking=True)
        self.tables[:b, :width].copy_(staged, non_blocking=True)
        if fix is not None:
            n = len(fix.rows)
            fix.apply(self.ids, (self.fix_rows[:n], self.fix_src[:n]))
        self.graphs[b].replay()
        return self.logits[b][:B]


class MixedGraphs:
    """CUDA graphs for small mixed steps: decodes plus a few prompt tokens (Day 13 meets Day 14).

    Under continuous batching every admission puts a prompt into a step; run eagerly, such a step
    costs ~10x a replayed decode step on a GPU (the launches, again), so refilling slots costs more
    than it saves. These graphs are keyed by (sequence bucket b, token bucket t) and captured the
    first time a step of that shape comes (a one-off cost of a warm-up pass and a capture):

        a step of 3 decodes + a 9-token prompt chunk (B = 4 sequences, T = 12 tokens) runs in the
        (b=8, t=16) graph: the 4 real sequences, then one padding sequence holding the 4 spare
        tokens (written to the scratch block, attending only to it), then 3 empty sequences.

    The attention kernel is captured with max_query_len = t: its grid has tiles for t queries per
    sequence, and tiles past a sequence's own q_len return at once (kernels/paged_attention.py).
    Steps with more than ``max_tokens`` tokens run eagerly: there the launches are a small share
    (EngineConfig.max_cudagraph_capture_size, default 4096). Below it they are not: on an H200,
    llama-3.2-1b, an eager step costs ~9 ms of host time whatever its size, and 64 decodes plus one
    512-token prompt chunk (576 tokens) ran eagerly at the earlier limit of 512; the Anyscale study
    at 64 slots (data/results/README.md) had 119 such steps, and continuous batching lost to static
    batching's pure decodes until the limit went to 4096.
    """

    def __init__(self, model: LlamaModel, cache: PagedKVCache, attention_fn, max_batch: int,
                 max_blocks_per_seq: int, max_tokens: int = 4096, capture: bool = True):
        dev = model.device
        self.capture = capture          # False: run the padded step eagerly (tests it on a CPU)
        self.model, self.cache, self.attention_fn = model, cache, attention_fn
        self.max_tokens = max_tokens
        self.seq_buckets = buckets_for(max_batch + 1)            # + 1: the padding sequence
        self.token_buckets = token_buckets(max_tokens)
        B, T = self.seq_buckets[-1], self.token_buckets[-1]
        self.scratch_slot = cache.scratch_block * cache.block_size
        self.ids = torch.zeros(T, dtype=torch.long, device=dev)
        self.positions = torch.zeros(T, dtype=torch.long, device=dev)
        self.slots = torch.full((T,), self.scratch_slot, dtype=torch.long, device=dev)
        self.seq_lens = torch.ones(B, dtype=torch.int32, device=dev)
        self.query_start_loc = torch.zeros(B + 1, dtype=torch.int32, device=dev)
        # wide enough for the padding sequence too (up to max_tokens positions, all in the scratch block)
        width = max(max_blocks_per_seq, -(-max_tokens // cache.block_size))
        self.tables = torch.full((B, width), cache.scratch_block, dtype=torch.int32, device=dev)
        self.rows = torch.zeros(B, dtype=torch.long, device=dev)   # logits rows (sampled tokens)
        self.graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self.logits: dict[tuple[int, int], torch.Tensor] = {}
        self.pool = None

    def bucket(self, num_seqs: int, num_tokens: int) -> tuple[int, int] | None:
        b = next((x for x in self.seq_buckets if x >= num_seqs + 1), None)
        t = next((x for x in self.token_buckets if x >= num_tokens), None)
        return None if b is None or t is None else (b, t)

    def _forward(self, b: int, t: int) -> torch.Tensor:
        ctx = PagedAttentionContext(self.cache, self.slots[:t], self.tables[:b], self.seq_lens[:b],
                                    self.query_start_loc[:b + 1], t, self.attention_fn)
        hidden = self.model.hidden_states(self.ids[None, :t], self.positions[None, :t], ctx)[0]
        return self.model.lm_head(hidden[self.rows[:b]])                   # (b, vocab)

    @torch.inference_mode()
    def _capture(self, key: tuple[int, int]) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):          # warm-up: Triton compiles, cuBLAS picks kernels
            self._forward(*key)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            self.logits[key] = self._forward(*key)
        self.pool = graph.pool()
        self.graphs[key] = graph

    def keys(self) -> list[tuple[int, int]]:
        """Every (sequence bucket, token bucket) a step can use (b = 1 holds only the padding
        sequence: no step uses it)."""
        # b is the bucket of num_seqs + 1 >= b_prev + 1 sequences, and each holds a token: t >= b_prev
        prev = dict(zip(self.seq_buckets[1:], self.seq_buckets))
        return [(b, t) for b in self.seq_buckets if b > 1 for t in self.token_buckets if t >= prev[b]]

    @torch.inference_mode()
    def capture_all(self) -> int:
        """Capture every bucket not captured yet, on an all-padding step (every token written to the
        scratch block: no real sequence's K/V is touched); returns how many were new. A warm-up calls
        it with the engine idle, so that no capture (a warm-up pass and a capture, tens of ms each on
        a GPU) happens inside a measurement: steps of a new shape come at the start of each run of a
        rate sweep, and the lowest rate's queueing delay would carry them. 257 slots: the 44 buckets
        a step can reach up to 512 tokens hold about 0.64 GB of bf16 logits buffers at a 128k
        vocabulary; up to 4096 tokens, 98 buckets and 1.8 GB."""
        if not self.capture:
            return 0
        new = [key for key in self.keys() if key not in self.graphs]
        idle = StepInputs([], [], [], [], [], [0])
        for key in new:
            self._upload(idle, [], *key)
            self._capture(key)
        return len(new)

    def run(self, inp: StepInputs, logits_rows: list[int], fix: TokenFix | None = None) -> torch.Tensor:
        """Upload a mixed step's inputs, replay its graph (captured now if new), return the logits
        of ``logits_rows`` (len(logits_rows), vocab).

        The inputs go in first: a new graph's warm-up pass executes for real, so it must run on
        this step's inputs (on the last step's, it would read their offsets into this step's
        smaller tensors, and write K/V to their slots). It computes the step once more than the
        replay does, which writes the same K/V to the same slots again."""
        b, t = key = self.bucket(len(inp.seq_lens), len(inp.ids))
        self._upload(inp, logits_rows, b, t)
        if fix is not None:
            fix.apply(self.ids)
        if not self.capture:
            return self._forward(b, t)[:len(logits_rows)]
        if key not in self.graphs:
            self._capture(key)
        self.graphs[key].replay()
        return self.logits[key][:len(logits_rows)]

    def _upload(self, inp: StepInputs, logits_rows: list[int], b: int, t: int) -> None:
        """The step's inputs, padded to the (b, t) bucket, into the static buffers."""
        B, T = len(inp.seq_lens), len(inp.ids)
        pad = t - T                                    # spare tokens: the padding sequence's queries
        ids = inp.ids + [0] * pad
        positions = inp.positions + list(range(pad))
        slots = inp.slots + [self.scratch_slot] * pad
        seq_lens = inp.seq_lens + [max(pad, 1)] + [1] * (b - B - 1)
        starts = inp.starts + [t] * (b - B)
        width = max(max((len(x) for x in inp.tables), default=1), -(-max(pad, 1) // self.cache.block_size))
        tables = torch.full((b, width), self.cache.scratch_block, dtype=torch.int32)
        fill_rows(tables.numpy(), inp.tables)
        rows = logits_rows + [0] * (b - len(logits_rows))
        pin = self.ids.device.type == "cuda"
        for dst, src, dtype in ((self.ids, ids, torch.long), (self.positions, positions, torch.long),
                                (self.slots, slots, torch.long), (self.seq_lens, seq_lens, torch.int32),
                                (self.query_start_loc, starts, torch.int32), (self.rows, rows, torch.long)):
            dst[:len(src)].copy_(torch.tensor(src, dtype=dtype, pin_memory=pin), non_blocking=True)
        self.tables[:b, :width].copy_(tables.pin_memory() if pin else tables, non_blocking=True)
