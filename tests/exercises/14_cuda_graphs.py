"""Plausible wrong versions of notebook 14's exercises; tests/test_exercises.py proves its checks catch each.

On a CPU the graph-capture checks run on the notebook's stand-in for torch.cuda (a tape of ATen ops
replayed on the recorded tensors), so these variants are caught in CI too."""

VARIANTS = {
    "capture": {
        # Forgot to copy the new input into the static buffer: every replay returns the capture-time output.
        "no_copy": '''def capture(fn, example, graphs=GRAPHS, warmup=3):
    static_x = example.clone()
    side = graphs.Stream()
    side.wait_stream(graphs.current_stream())
    with graphs.stream(side):
        for _ in range(warmup):
            fn(static_x)
    graphs.current_stream().wait_stream(side)
    graph = graphs.CUDAGraph()
    with graphs.graph(graph):
        static_y = fn(static_x)

    def replay(x):
        graph.replay()
        return static_y
    return replay
''',
        # Rebinds the name instead of copying into the captured tensor: the graph still reads the old one.
        "rebind_not_copy": '''def capture(fn, example, graphs=GRAPHS, warmup=3):
    static_x = example.clone()
    side = graphs.Stream()
    side.wait_stream(graphs.current_stream())
    with graphs.stream(side):
        for _ in range(warmup):
            fn(static_x)
    graphs.current_stream().wait_stream(side)
    graph = graphs.CUDAGraph()
    with graphs.graph(graph):
        static_y = fn(static_x)

    def replay(x):
        nonlocal static_x
        static_x = x.clone()
        graph.replay()
        return static_y
    return replay
''',
        # Captures a graph but then runs the step eagerly: right values, none of the saving.
        "eager_replay": '''def capture(fn, example, graphs=GRAPHS, warmup=3):
    static_x = example.clone()
    side = graphs.Stream()
    side.wait_stream(graphs.current_stream())
    with graphs.stream(side):
        for _ in range(warmup):
            fn(static_x)
    graphs.current_stream().wait_stream(side)
    graph = graphs.CUDAGraph()
    with graphs.graph(graph):
        static_y = fn(static_x)

    def replay(x):
        static_x.copy_(x)
        return fn(static_x)
    return replay
''',
        # No warm-up: the one-off work (workspaces, compilation) would land inside the capture.
        "no_warmup": '''def capture(fn, example, graphs=GRAPHS, warmup=3):
    static_x = example.clone()
    graph = graphs.CUDAGraph()
    with graphs.graph(graph):
        static_y = fn(static_x)

    def replay(x):
        static_x.copy_(x)
        graph.replay()
        return static_y
    return replay
''',
        # Warms up on the current (default) stream instead of a side stream.
        "warmup_on_default_stream": '''def capture(fn, example, graphs=GRAPHS, warmup=3):
    static_x = example.clone()
    for _ in range(warmup):
        fn(static_x)
    graph = graphs.CUDAGraph()
    with graphs.graph(graph):
        static_y = fn(static_x)

    def replay(x):
        static_x.copy_(x)
        graph.replay()
        return static_y
    return replay
''',
    },
    "graph_buckets": {
        # Powers of two only: a max_num_seqs that is not one (48) loses its bucket; 33..48 get no graph.
        "powers_only": '''def graph_buckets(max_batch):
    out, b = [], 1
    while b <= max_batch:
        out.append(b)
        b *= 2
    return out
''',
        # Rounds the largest bucket up to the next power of two (64 for 48): a graph larger than any batch.
        "next_power": '''def graph_buckets(max_batch):
    out, b = [], 1
    while b < max_batch:
        out.append(b)
        b *= 2
    return out + [b]
''',
    },
    "pad_to_bucket": {
        # Off by one in the bucket index (floor of log2 instead of its ceiling): a batch of 5 gets the
        # 4-graph, and one sequence is dropped from the step.
        "round_down": '''def pad_to_bucket(ids, positions, slots, buckets, scratch_slot):
    B = len(ids)
    if B > max(buckets):
        return None
    bucket = max(b for b in buckets if b <= B)
    pad = bucket - B
    return {"bucket": bucket,
            "ids": list(ids) + [0] * pad,
            "positions": list(positions) + [0] * pad,
            "slots": list(slots) + [scratch_slot] * pad,
            "seq_lens": [p + 1 for p in positions] + [1] * pad}
''',
        # `>` instead of `>=`: a batch of exactly 8 runs the 16-graph, and 256 gets none.
        "strictly_larger": '''def pad_to_bucket(ids, positions, slots, buckets, scratch_slot):
    B = len(ids)
    fits = [b for b in buckets if b > B]
    if not fits:
        return None
    bucket = min(fits)
    pad = bucket - B
    return {"bucket": bucket,
            "ids": list(ids) + [0] * pad,
            "positions": list(positions) + [0] * pad,
            "slots": list(slots) + [scratch_slot] * pad,
            "seq_lens": [p + 1 for p in positions] + [1] * pad}
''',
        # Padding rows repeat the last real row ("valid inputs"): they write that sequence's cache slot.
        "pad_repeats_last_row": '''def pad_to_bucket(ids, positions, slots, buckets, scratch_slot):
    B = len(ids)
    fits = [b for b in buckets if b >= B]
    if not fits:
        return None
    bucket = min(fits)
    pad = bucket - B
    return {"bucket": bucket,
            "ids": list(ids) + [0] * pad,
            "positions": list(positions) + [0] * pad,
            "slots": list(slots) + [slots[-1]] * pad,
            "seq_lens": [p + 1 for p in positions] + [1] * pad}
''',
        # seq_len = position (forgets the token being decoded) and 0 for padding rows (a softmax over no keys).
        "seq_len_off_by_one": '''def pad_to_bucket(ids, positions, slots, buckets, scratch_slot):
    B = len(ids)
    fits = [b for b in buckets if b >= B]
    if not fits:
        return None
    bucket = min(fits)
    pad = bucket - B
    return {"bucket": bucket,
            "ids": list(ids) + [0] * pad,
            "positions": list(positions) + [0] * pad,
            "slots": list(slots) + [scratch_slot] * pad,
            "seq_lens": list(positions) + [0] * pad}
''',
    },
    "simulate_steps": {
        # The overlapped step costs host + device (the sum), not the larger of the two.
        "sum_not_max": '''def simulate_steps(host_ms, device_ms, overlap):
    if overlap:   # the next step's host work runs beside this step's GPU work
        total = host_ms[0] + sum(h + d for h, d in zip(host_ms[1:], device_ms[:-1])) + device_ms[-1]
    else:
        total = sum(host_ms) + sum(device_ms)
    return total, 1 - sum(device_ms) / total
''',
        # Forgets the one-step-in-flight limit: the host runs ahead as far as it likes.
        "unbounded_lookahead": '''def simulate_steps(host_ms, device_ms, overlap):
    host_free = gpu_done = 0.0
    for h, d in zip(host_ms, device_ms):
        launched = host_free + h
        start = max(launched, gpu_done)
        host_free = launched if overlap else start + d
        gpu_done = start + d
    return gpu_done, 1 - sum(device_ms) / gpu_done
''',
        # "The GPU idles while the host works": true only for the synchronous engine.
        "idle_is_host_share": '''def simulate_steps(host_ms, device_ms, overlap):
    host_free = gpu_done = 0.0
    for h, d in zip(host_ms, device_ms):
        launched = host_free + h
        start = max(launched, gpu_done)
        host_free = start if overlap else start + d
        gpu_done = start + d
    return gpu_done, sum(host_ms) / gpu_done
''',
    },
}
