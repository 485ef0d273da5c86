"""The GPU benchmark grid of ``make gpu-check`` (issue 13): ``python -m bench.gpu_grid``.

Each elementwise loss (focal_bce, asl, ghmc, dice) at (262144, 270) and
(65536, 270), fp32 and bf16 logits, bool targets, against each candidate of
its ``bench_<loss>.py``: ``fused-triton``, ``fused-cuda``, ``eager`` (the
reference), ``compile`` (``torch.compile`` of it, mode=None) and the
``anchor`` (torchvision focal, official ASL, mmdet's GHM-C loop, user dice).
A step is the forward plus ``loss.backward()``, ``input.grad`` None before it.

Issue 14's row losses come first (``bench/_grid_rows.py``): softmax focal (gamma=2)
and DSC, mean, at (65536, 270), (8192, 32000) and (4096, 128000), fp32 and bf16
logits, int64 class targets, candidates ``fused-triton``, ``fused-cuda``, ``fused``
(backend auto, its backend column what auto picks), ``compile`` (not above
C=32000) and the anchor ``F.cross_entropy``; no eager row. Their byte model is
``row_step_bytes`` (logits read once, gradient written once, 8 B of target a row:
8 B/elem fp32, 4 B bf16); ``target`` says met/MISSED for issue 14 (softmax focal
>= 2x / 1.5x / 1x the anchor's speed at C = 270 / 32000 / 128000; DSC <= 1.2x
softmax focal's time, also in ``dsc_vs_focal``), and the markdown opens with them.

Timings (``bench/_grid_time.py``):

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
vehicle: tiny shapes (row losses: (256, 270), (16, 32000)), the C++ ``cpu``
backend (``fused`` = auto = cpu too), perf_counter medians; no
graphs, sync check or peak memory; host_us is then the whole step.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import gc
import importlib
import math
import sys
import time
import warnings
from pathlib import Path

import torch

from ._case import Case, multilabel_inputs
from . import _grid_rows
from ._grid_report import (BASELINES, COLUMNS, derive, fmt as _fmt, markdown,
                           report_header, write_csv)
from ._grid_rows import QUICK_ROW_SHAPES, ROW_LOSSES, ROW_SHAPES, row_step_bytes
from ._grid_time import (CPU_REPS, HOST_CALLS, HOST_TRIALS, _step, _sync, bench_ms,
                         copy_bandwidth, graph_ms, host_syncs, host_us, peak_x_grad)
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
# for the sync check and peak memory: 1-3 s a case. Pass 1 runs the 12 row-loss cases
# first (issue 14; 4 candidates each, F.cross_entropy at (4096, 128000) fp32 ~4 ms a
# step: ~30 s, plus ~20 s of Triton JIT for the row kernels), then the 16 elementwise
# cases (~30 s + ~20 s JIT, less when the tests stage cached the kernels): ~100 s. The
# ~25 s left go to pass 2, torch.compile in case order: ~20 s for the first (inductor
# starts), 4-8 s each after, so a few rows at most. Should pass 1 overrun, the deadline
# drops the last cases: the elementwise (65536, 270) ones, never issue 14's.


def step_bytes(loss: str, numel: int, logit_bytes: int, target_bytes: int = 1) -> int:
    """The least bytes one fused forward+backward step must move.

    Each read pass (``READ_PASSES``) reads the logits and the targets once; the
    gradient, in the logits' dtype, is written once. Per element, bool targets:
    focal BCE and ASL 4+1+4 = 9 B (fp32 logits), 2+1+2 = 5 B (bf16); GHM-C and
    dice 2*(4+1)+4 = 14 B, 2*(2+1)+2 = 8 B. Per-class operands (pos_weight,
    270 floats), GHM-C's histogram and the scalar loss are left out (< 0.01 %).
    """
    return (READ_PASSES[loss] * (logit_bytes + target_bytes) + logit_bytes) * numel


def make_case(loss: str, shape, dtype, device) -> Case:
    """The case with bool targets for every elementwise loss (bench_ghmc's own cases
    use float targets; the byte model has a 1-byte target); row losses: _grid_rows."""
    if loss in ROW_LOSSES:
        return _grid_rows.make_case(loss, shape, dtype, device)
    make = importlib.import_module(f"bench.bench_{loss}").BENCH.make_inputs
    if loss == "ghmc":
        from .bench_ghmc import _acc_sum
        make = functools.partial(multilabel_inputs, logit_scale=2.0, more=_acc_sum)
    device = torch.device(device)
    return Case(loss, tuple(shape), dtype, device, lambda: make(tuple(shape), dtype, device))


def candidates(loss: str, case: Case) -> list:
    """fused-<backend> rows, eager, compile and the anchor (not GHM-C's extra rows);
    the row losses' are ``_grid_rows.candidates``."""
    if loss in ROW_LOSSES:
        return _grid_rows.candidates(loss, case)
    bench = importlib.import_module(f"bench.bench_{loss}").BENCH
    return [c for c in bench.candidates(case)
            if c.name.startswith("fused") or c.name in BASELINES]


def blank_row(case: Case, cand, common: dict, copy_gbs: float, note: str = "") -> dict:
    numel = math.prod(case.shape)
    size = torch.tensor([], dtype=case.dtype).element_size()
    nbytes = (row_step_bytes(case.shape, size) if case.loss in ROW_LOSSES
              else step_bytes(case.loss, numel, size))
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
    """Pass 1 measures every case without torch.compile, the row losses' first (issue
    14), then the elementwise ones, large shape first; pass 2 adds compile rows, in
    case order, while the deadline allows (``_grid_rows.compile_skip`` excepted); the CSV gets each case's rows at the end
    (``-grid.partial.csv`` holds pass 1's rows should the run be cut short)."""
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_grid",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny shapes (a smoke test)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--loss", action="append", choices=ROW_LOSSES + LOSSES, help="repeatable; default all")
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
    losses = args.loss or ROW_LOSSES + LOSSES  # the row losses (issue 14) first
    cases = [make_case(loss, shape, dtype, device)
             for rows, shapes in ((True, QUICK_ROW_SHAPES if args.quick else ROW_SHAPES),
                                  (False, QUICK_SHAPES if args.quick else SHAPES))
             for shape in shapes for loss in losses if (loss in ROW_LOSSES) == rows
             for dtype in DTYPES]
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
            why = "--no-compile" if args.no_compile else _grid_rows.compile_skip(case) or (
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
    _grid_rows.annotate([r for _, _, rows in done for r in rows])  # issue 14's verdicts
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
