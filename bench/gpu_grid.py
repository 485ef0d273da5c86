"""The GPU benchmark grid of ``make gpu-check`` (issue 13): ``python -m bench.gpu_grid``.

Each elementwise loss (focal_bce, asl, ghmc, dice) at (262144, 270) and
(65536, 270), fp32 and bf16 logits, bool targets, against each candidate of
its ``bench_<loss>.py``: ``fused-triton``, ``fused-cuda``, ``eager`` (the
reference), ``compile`` (``torch.compile`` of it, mode=None) and the
``anchor`` (torchvision focal, official ASL, mmdet's GHM-C loop, user dice).
A step is the forward plus ``loss.backward()``, ``input.grad`` None before it.

- ``bench_ms``: ``triton.testing.do_bench`` median (L2 cleared before each call).
- ``graph_ms``: the step captured once in a ``torch.cuda.CUDAGraph`` (static
  inputs, warmed up on a side stream); median CUDA-event time of one replay,
  L2 cleared by a 256 MB memset before each: device time without host cost.
  Not tried where the step syncs the host.
- ``host_us``: host wall time per step of HOST_CALLS steps issued with no sync
  in the loop (the device synchronised after it), the least of HOST_TRIALS.
  The launch queue does not fill at that count, so it is the host's cost,
  unless ``host_syncs`` (``torch.cuda.set_sync_debug_mode`` saw a sync, e.g.
  mmdet's ``.item()`` per bin): then it includes device time.
- ``bytes_per_elem``, ``step_mb``: ``step_bytes``; ``gb_s``/``graph_gb_s`` =
  those bytes over bench_ms/graph_ms, ``*copy_pct`` their % of ``copy_gb_s``
  (``copy_bandwidth``, measured at the start of the run). Baselines get the
  same bytes: effective GB/s, not what they move.
- ``speedup_vs_<b>``: b's bench_ms / this one (``graph_speedup_*`` from graph_ms);
  ``peak_extra_x_grad``: peak allocated in one step minus before, over grad
  bytes; ``warmup_s``: the first call (JIT, compile), outside every timing.

Writes ``<out>/<device-slug>-grid.csv`` (appended), ``-grid.md`` (rewritten as
it goes) and ``-grid.png`` (when matplotlib imports); ``main`` says in which
order and how the deadline trims. ``--device cpu --quick`` is the CPU test
vehicle: tiny shapes, the C++ ``cpu`` backend, perf_counter medians; no
graphs, sync check or peak memory; host_us is then the whole step.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import gc
import importlib
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

from ._case import Case, multilabel_inputs
from ._grid_report import (BASELINES, COLUMNS, derive, fmt as _fmt, markdown,
                           report_header, write_csv)
from .run import device_name, git_commit, short_error, slug, triton_version

LOSSES = ("focal_bce", "asl", "ghmc", "dice")
SHAPES = ((262144, 270), (65536, 270))  # the large shape first: it is where kernels dominate
QUICK_SHAPES = ((128, 270), (512, 270))
DTYPES = (torch.float32, torch.bfloat16)
# Read passes over (logits, target) of each fused step: focal BCE and ASL read once,
# writing the gradient in that pass; GHM-C reads for its histogram, then for the loss
# and gradient; dice for its column sums, then for the gradient.
READ_PASSES = {"focal_bce": 1, "asl": 1, "ghmc": 2, "dice": 2}
# Budget arithmetic (H200, 125 s deadline): per candidate do_bench runs ~5 + 25 ms + 80 ms
# worth of steps (<= 0.3 s even for eager at 262144 rows, ~10 ms a step), the graph
# 4 warm-ups + REPLAYS replays, host 3 x 8 steps (0.25 s at 10 ms), plus one step each
# for the sync check and peak memory: 1-3 s a case, 16 cases ~30 s, plus Triton JIT of
# ~8 kernels (~20 s, less when the tests stage cached them): pass 1 ~50 s. Pass 2 has
# the ~65 s left for torch.compile: ~20 s for the first (inductor starts), ~4-8 s each
# after, so most of the 16 compile rows; the deadline drops the rest, last cases first.
BENCH_WARMUP_MS, BENCH_REP_MS = 25, 80
REPLAYS, HOST_CALLS, HOST_TRIALS, CPU_REPS = 20, 8, 3, 3


def step_bytes(loss: str, numel: int, logit_bytes: int, target_bytes: int = 1) -> int:
    """The least bytes one fused forward+backward step must move.

    Each read pass (``READ_PASSES``) reads the logits and the targets once; the
    gradient, in the logits' dtype, is written once. Per element, bool targets:
    focal BCE and ASL 4+1+4 = 9 B (fp32 logits), 2+1+2 = 5 B (bf16); GHM-C and
    dice 2*(4+1)+4 = 14 B, 2*(2+1)+2 = 8 B. Per-class operands (pos_weight,
    270 floats), GHM-C's histogram and the scalar loss are left out (< 0.01 %).
    """
    return (READ_PASSES[loss] * (logit_bytes + target_bytes) + logit_bytes) * numel


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


def make_case(loss: str, shape, dtype, device) -> Case:
    """The case with bool targets for every loss (bench_ghmc's own cases use float
    targets; this grid keeps the byte model's 1-byte target everywhere)."""
    make = importlib.import_module(f"bench.bench_{loss}").BENCH.make_inputs
    if loss == "ghmc":
        from .bench_ghmc import _acc_sum
        make = functools.partial(multilabel_inputs, logit_scale=2.0, more=_acc_sum)
    device = torch.device(device)
    return Case(loss, tuple(shape), dtype, device, lambda: make(tuple(shape), dtype, device))


def candidates(loss: str, case: Case) -> list:
    """fused-<backend> rows, eager, compile and the anchor (not GHM-C's extra rows)."""
    bench = importlib.import_module(f"bench.bench_{loss}").BENCH
    return [c for c in bench.candidates(case)
            if c.name.startswith("fused") or c.name in BASELINES]


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


def blank_row(case: Case, cand, common: dict, copy_gbs: float, note: str = "") -> dict:
    numel = math.prod(case.shape)
    nbytes = step_bytes(case.loss, numel, torch.tensor([], dtype=case.dtype).element_size())
    return dict(common, loss=case.loss, shape=case.shape_str, dtype=case.dtype_str,
                candidate=cand.name, backend=cand.backend, step_bytes=nbytes,
                bytes_per_elem=nbytes // numel, step_mb=nbytes / 1e6, copy_gb_s=copy_gbs,
                note=note)


def run_case(case: Case, cands: list, device, copy_gbs: float, common: dict) -> list:
    """Measure each of ``cands`` on one case; a failure is noted in its row only."""
    rows = [blank_row(case, c, common, copy_gbs) for c in cands]
    try:
        inputs = case.make_inputs()
    except Exception as exc:  # noqa: BLE001 - e.g. out of memory: the case is lost, not the run
        for r in rows:
            r["note"] = f"inputs: {short_error(exc)}"
        return rows
    cuda = device.type == "cuda"
    for cand, row in zip(cands, rows):
        stage = "warm-up"
        try:
            t0 = time.perf_counter()
            _step(cand.fn, inputs)  # compiles / JITs: outside every timing
            _sync(device)
            row["warmup_s"] = time.perf_counter() - t0
            stage = "do_bench"
            row["bench_ms"] = bench_ms(cand.fn, inputs, device)
            stage = "host"  # on a CPU the step is synchronous: a short check is enough
            row["host_us"] = host_us(cand.fn, inputs, device, *(() if cuda else (2, 2)))
            if cuda:
                stage = "sync check"
                row["host_syncs"] = host_syncs(cand.fn, inputs)
                stage = "peak memory"
                row["peak_extra_x_grad"] = peak_x_grad(cand.fn, inputs, device)
                if row["host_syncs"]:
                    row["note"] = "host sync in the step: no CUDA graph"
                else:
                    stage = "CUDA graph"
                    row["graph_ms"] = graph_ms(cand.fn, inputs)
        except Exception as exc:  # noqa: BLE001 - one broken row must not end the grid
            row["note"] = f"{stage}: {short_error(exc)}"
            print(f"  ! {case.loss} {case.shape_str} {case.dtype_str} {cand.name}: "
                  f"{row['note']}", flush=True)
        finally:
            inputs["input"].grad = None
            if cuda:
                try:
                    torch.cuda.synchronize(device)
                    torch.cuda.empty_cache()
                except Exception:  # noqa: BLE001 - a sticky CUDA error: later rows will say so
                    pass
    del inputs
    gc.collect()
    return derive(rows, copy_gbs)


class Deadline:
    """When to stop starting work, from the costs seen so far."""

    def __init__(self, seconds: float):
        self.end, self.case_s, self.compile_s = time.monotonic() + seconds, [], []

    def left(self) -> float:
        return self.end - time.monotonic()

    def case_estimate(self) -> float:
        return max(self.case_s[-3:], default=5.0)  # recent: the first cases carry Triton JIT

    def compile_estimate(self) -> float:
        return (self.compile_s[-1] if self.compile_s else 20.0) + 2  # the first starts inductor


def main(argv=None) -> int:
    """Pass 1 measures every case without torch.compile; pass 2 adds compile rows, in
    case order, while the deadline allows; the CSV gets each case's rows at the end
    (``-grid.partial.csv`` holds pass 1's rows should the run be cut short)."""
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_grid",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny shapes (a smoke test)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--loss", action="append", choices=LOSSES, help="repeatable; default all")
    parser.add_argument("--deadline-s", type=float, default=125.0,
                        help="start no work after this many seconds")
    parser.add_argument("--no-compile", action="store_true", help="leave out torch.compile")
    args = parser.parse_args(argv)
    deadline = Deadline(args.deadline_s)
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    name = device_name(device)
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    common = {"timestamp": stamp, "commit": git_commit() or "unknown", "device": name,
              "torch": torch.__version__, "triton": triton_version(),
              "cuda": torch.version.cuda or "none"}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = out / f"{slug(name)}-grid"
    partial, md = base.with_suffix(".partial.csv"), base.with_suffix(".md")
    partial.unlink(missing_ok=True)
    copy_gbs = copy_bandwidth(device)
    header = report_header(common, copy_gbs, device.type == "cuda", HOST_CALLS, HOST_TRIALS,
                           CPU_REPS)
    print("\n".join(header), flush=True)
    cases = [make_case(loss, shape, dtype, device)
             for shape in (QUICK_SHAPES if args.quick else SHAPES)
             for loss in (args.loss or LOSSES) for dtype in DTYPES]
    done, skipped = [], []  # done: (case, its candidates, its rows)

    def report(rows):
        for r in rows:
            print("  " + "  ".join(f"{key}={_fmt(r.get(key))}" for key in (
                "candidate", "bench_ms", "graph_ms", "host_us", "host_syncs", "copy_pct",
                "graph_copy_pct", "speedup_vs_compile", "note") if _fmt(r.get(key))), flush=True)
        md.write_text(markdown([r for _, _, rs in done for r in rs], header, skipped))
    for k, case in enumerate(cases, 1):
        title = f"{case.loss} {case.shape_str} {case.dtype_str}"
        if deadline.left() < deadline.case_estimate():
            skipped.append(title)
            continue
        print(f"\n[{k}/{len(cases)}] {title} ({deadline.left():.0f} s left)", flush=True)
        try:
            cands = candidates(case.loss, case)
        except Exception as exc:  # noqa: BLE001
            print(f"  ! candidates: {short_error(exc)}", flush=True)
            cands = []
        t0 = time.monotonic()
        rows = run_case(case, [c for c in cands if c.name != "compile"], device, copy_gbs, common)
        deadline.case_s.append(time.monotonic() - t0)
        done.append((case, cands, rows))
        write_csv(partial, rows)
        report(rows)
    for case, cands, rows in done:
        for cand in (c for c in cands if c.name == "compile"):
            why = "--no-compile" if args.no_compile else (
                deadline.left() < deadline.compile_estimate() and
                f"torch.compile (~{deadline.compile_estimate():.0f} s) would not fit the deadline")
            if why:
                rows.append(blank_row(case, cand, common, copy_gbs, f"skipped: {why}"))
                continue
            print(f"\n[compile] {case.loss} {case.shape_str} {case.dtype_str} "
                  f"({deadline.left():.0f} s left)", flush=True)
            rows += run_case(case, [cand], device, copy_gbs, common)
            deadline.compile_s.append(rows[-1].get("warmup_s") or 0.0)
            report(rows[-1:])
        order = [c.name for c in cands]
        rows.sort(key=lambda r: order.index(r["candidate"]))
        derive(rows, copy_gbs)
    for _, _, rows in done:
        write_csv(base.with_suffix(".csv"), rows)
    partial.unlink(missing_ok=True)
    all_rows = [r for _, _, rows in done for r in rows]
    md.write_text(markdown(all_rows, header, skipped))
    print(f"\nwrote {len(all_rows)} rows to {base.with_suffix('.csv')} and {md}; "
          f"skipped {len(skipped)} cases", flush=True)
    try:  # the chart is optional
        from . import plot
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an empty memory panel on a CPU
            drawn = all_rows and plot.draw([{k: _fmt(r.get(k)) for k in COLUMNS}
                                            for r in all_rows], base.with_suffix(".png"),
                                           f"{name} | torch {common['torch']} | {stamp} | "
                                           f"{common['commit']}")
        print(f"chart: {base.with_suffix('.png')}" if drawn else "chart skipped")
    except Exception as exc:  # noqa: BLE001
        print(f"chart failed: {short_error(exc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
