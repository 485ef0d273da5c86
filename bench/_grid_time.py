"""The timings of ``bench.gpu_grid``, one forward + ``loss.backward()`` step each.

- ``copy_bandwidth``: ``dst.copy_(src)`` GB/s, the grid's 100 %;
- ``bench_ms``: ``triton.testing.do_bench`` median (L2 cleared before each call;
  BENCH_WARMUP_MS of warm-up, BENCH_REP_MS of repetitions); on a CPU the median
  of CPU_REPS perf_counter steps;
- ``graph_ms``: median CUDA-event time of one replay of the captured step (REPLAYS
  replays, a 256 MB memset before each clears L2);
- ``host_us``: host µs per step of HOST_CALLS steps issued with no sync (least of
  HOST_TRIALS); ``host_syncs``: torch's sync debug mode saw a host sync in a step;
- ``peak_x_grad``: peak allocated in one step minus before, over the grad's bytes.

Every step sets ``input.grad`` to None first (``_step``).
"""
from __future__ import annotations

import statistics
import time
import warnings

import torch

BENCH_WARMUP_MS, BENCH_REP_MS = 25, 80
REPLAYS, HOST_CALLS, HOST_TRIALS, CPU_REPS = 20, 8, 3, 3



def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_bandwidth(device: torch.device, nbytes: int | None = None, reps: int = 10) -> float:
    """Device-to-device copy GB/s: ``dst.copy_(src)`` of ``nbytes`` (1 GiB on CUDA,
    64 MiB on CPU), 2 x bytes (read + write) over the best of ``reps`` copies,
    timed with CUDA events (perf_counter on CPU)."""
    nbytes = nbytes or ((1 << 30) if device.type == "cuda" else 64 << 20)
    src = torch.ones(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dst.copy_(src)
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) * 1e-3)
            continue
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    return 2 * nbytes / best / 1e9


def _step(fn, inputs) -> None:
    inputs["input"].grad = None
    fn(inputs)


def bench_ms(fn, inputs, device) -> float:
    """do_bench median on CUDA; on CPU the median of CPU_REPS perf_counter steps."""
    if device.type == "cuda":
        import triton.testing
        res = triton.testing.do_bench(lambda: fn(inputs), warmup=BENCH_WARMUP_MS,
                                      rep=BENCH_REP_MS, grad_to_none=[inputs["input"]],
                                      quantiles=[0.5])
        return float(res[0] if isinstance(res, (list, tuple)) else res)
    times = []
    for _ in range(CPU_REPS):
        t0 = time.perf_counter()
        _step(fn, inputs)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def graph_ms(fn, inputs, replays: int = REPLAYS) -> float:
    """Median device ms of one replay of the captured step, L2 cleared before each."""
    x = inputs["input"]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the default stream, as capture wants
        for _ in range(3):
            _step(fn, inputs)
    torch.cuda.current_stream().wait_stream(side)
    x.grad = None
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            fn(inputs)
        flush = torch.empty(256 << 20, dtype=torch.uint8, device=x.device)
        graph.replay()
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(replays)]
        for start, end in events:
            flush.zero_()
            start.record()
            graph.replay()
            end.record()
        torch.cuda.synchronize()
        return statistics.median(s.elapsed_time(e) for s, e in events)
    finally:
        x.grad = None
        del graph
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def host_us(fn, inputs, device, calls: int = HOST_CALLS, trials: int = HOST_TRIALS) -> float:
    """Host µs per step issued back to back without a sync inside the loop."""
    best = float("inf")
    for _ in range(trials):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(calls):
            _step(fn, inputs)
        best = min(best, (time.perf_counter() - t0) / calls)
        _sync(device)
    return best * 1e6


def host_syncs(fn, inputs) -> bool:
    """Whether one step makes a host sync (torch's sync debug mode warns on each)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            _step(fn, inputs)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    return any("synchroniz" in str(w.message).lower() for w in caught)


def peak_x_grad(fn, inputs, device) -> float:
    x = inputs["input"]
    x.grad = None
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    _step(fn, inputs)
    _sync(device)
    return (torch.cuda.max_memory_allocated(device) - before) / (x.numel() * x.element_size())
