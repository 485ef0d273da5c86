"""Benchmark runner: ``python -m bench.run [--out DIR] [--quick] [--loss NAME]``.

For every (loss, shape, dtype) from each ``bench/bench_<loss>.py`` and every
candidate implementation it measures one forward+backward call:

- time: ``triton.testing.do_bench`` median on CUDA; on CPU one warm-up, then
  the median of ``--reps`` ``time.perf_counter`` runs, taken round-robin over
  the candidates. ``input.grad`` is set to None before every run, so each one
  allocates its gradient afresh.
- effective GB/s: (bytes of every input tensor read once + the gradient written
  once, in the logits' dtype) / time, and its % of the memory-bandwidth
  roofline: a spec-sheet table for known GPUs, otherwise a measured copy
  (clone) bandwidth, which the header says.
- peak extra memory: on CUDA ``max_memory_allocated`` during the call minus
  what was allocated before it; on CPU the peak of the profiler's allocation
  timeline (``bench/_memory.py``); with the inputs alive and ``grad`` None, in
  MiB and as a multiple of the gradient's size.
- speed-up of each candidate against each baseline (baseline ms / its ms),
  from times of this run only, because absolute times on shared machines are noise.

Prints a table, appends rows to ``<out>/<device-slug>.csv`` and, when
matplotlib is importable, draws ``<out>/<device-slug>.png`` from this run.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import os
import importlib
import pkgutil
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import fused_losses
from fused_losses._backend import resolve_backend

from . import plot
from ._memory import cpu_peak_extra_bytes
from ._report import print_case, write_csv

# "anchor" is the formula people use today, named by each row's backend column
# (torchvision's focal loss, mmdet's GHM-C loop, ...).
BASELINES = ("eager", "compile", "anchor")
# Spec-sheet HBM bandwidth in GB/s, matched on name-token prefixes so that
# e.g. "GH200" is not taken for "H200".
ROOFLINE_GBS = ((("h200",), 4800.0), (("h100", "hbm3"), 3350.0), (("h100", "sxm"), 3350.0),
                (("h100", "pcie"), 2000.0), (("a100", "80gb"), 2039.0),
                (("a100", "40gb"), 1555.0))
MIB = 1 << 20


def available_losses() -> list:
    """Stems of the ``bench_<loss>.py`` modules beside this file."""
    here = str(Path(__file__).parent)
    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([here])
                  if m.name.startswith("bench_"))


def triton_version() -> str:
    try:
        import triton
    except ImportError:
        return "none"
    return triton.__version__


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    proc = platform.processor() or platform.machine()
    return f"cpu {proc}" if proc else "cpu"


def git_commit() -> str:
    """$BENCH_COMMIT when set (a copied tree's .git may be stale), else git's HEAD."""
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_copy_gbs(device: torch.device) -> float:
    """Best of 6 clones of a large buffer (1 GiB on CUDA, 256 MiB on CPU), bytes read + written."""
    nbytes = (1 << 30) if device.type == "cuda" else 256 * MIB
    src = torch.ones(nbytes, dtype=torch.uint8, device=device)
    best = float("inf")
    for _ in range(6):
        if device.type == "cuda":
            # Events, because launch and sync overhead is a few % of a 1 GiB copy.
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            dst = src.clone()
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) * 1e-3
        else:
            start = time.perf_counter()
            dst = src.clone()
            seconds = time.perf_counter() - start
        best = min(best, seconds)
        del dst
    return 2 * nbytes / best / 1e9


def roofline(device: torch.device, name: str) -> tuple:
    """(GB/s, where the number comes from)."""
    if device.type == "cuda":
        tokens = re.split(r"[^a-z0-9]+", name.lower())
        for keys, gbs in ROOFLINE_GBS:
            if all(any(tok.startswith(k) for tok in tokens) for k in keys):
                return gbs, "spec table"
        return measure_copy_gbs(device), "measured 1 GiB clone bandwidth"
    return measure_copy_gbs(device), "measured copy bandwidth"


def short_error(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:300]


def call_once(fn, inputs: dict, device: torch.device) -> float:
    """Seconds for one call, starting from ``grad`` None so every call allocates it."""
    inputs["input"].grad = None
    sync(device)
    start = time.perf_counter()
    fn(inputs)
    sync(device)
    return time.perf_counter() - start


def time_candidates(cands: list, inputs: dict, device: torch.device, reps: int,
                    failed: dict) -> dict:
    """(median ms, spread %) per candidate name; failures go into ``failed``.

    Spread: half the 20th-80th percentile range of do_bench's timings on CUDA,
    half the min-max range of the reps on CPU, as a % of the median.

    Every candidate has already had its warm-up call. On CPU the reps go
    round-robin over the candidates, so that a load change on a shared machine
    slows them all alike and the speed-up ratios stay meaningful.
    """
    samples = {cand.name: [] for cand in cands}
    for rep in range(1 if device.type == "cuda" else reps):
        for cand in cands:
            if cand.name in failed:
                continue
            try:
                if device.type == "cuda":
                    import triton.testing
                    # do_bench clears L2 before every timed call.
                    lo, mid, hi = triton.testing.do_bench(
                        lambda: cand.fn(inputs), grad_to_none=[inputs["input"]],
                        quantiles=[0.2, 0.5, 0.8])
                    samples[cand.name] = [mid * 1e-3, lo * 1e-3, hi * 1e-3]
                else:
                    samples[cand.name].append(call_once(cand.fn, inputs, device))
            except Exception as exc:  # one broken candidate must not end the run
                failed[cand.name] = short_error(exc)
    out = {}
    for name, s in samples.items():
        if not s or name in failed:
            continue
        mid = s[0] if device.type == "cuda" else statistics.median(s)
        out[name] = (mid * 1e3, 100 * (max(s) - min(s)) / 2 / mid)
    return out


def peak_extra_bytes(fn, inputs: dict, device: torch.device):
    """Bytes allocated at the peak of one call beyond what was live before it."""
    inputs["input"].grad = None
    gc.collect()
    if device.type == "cpu":
        return cpu_peak_extra_bytes(lambda: fn(inputs))
    if device.type != "cuda":
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn(inputs)
    sync(device)
    return torch.cuda.max_memory_allocated(device) - before


def run_case(case, bench, device, reps, roof_gbs, common) -> tuple:
    """Measure every candidate on one case: (rows with the CSV columns, bytes moved)."""
    inputs = case.make_inputs()
    grad_bytes = inputs["input"].numel() * inputs["input"].element_size()
    io_bytes = grad_bytes + sum(t.numel() * t.element_size() for t in inputs.values()
                                if isinstance(t, torch.Tensor))
    cands, failed, peaks = bench.candidates(case), {}, {}
    for cand in cands:
        try:
            call_once(cand.fn, inputs, device)  # warm-up: compiles, autotunes, faults pages in
        except Exception as exc:
            failed[cand.name] = short_error(exc)
    times = time_candidates([c for c in cands if c.name not in failed], inputs, device,
                            reps, failed)
    for name in list(times):
        try:
            peaks[name] = peak_extra_bytes(next(c for c in cands if c.name == name).fn,
                                           inputs, device)
        except Exception as exc:
            failed[name] = short_error(exc)
            del times[name]
    rows = []
    for cand in cands:
        row = dict(common, loss=case.loss, shape=case.shape_str, dtype=case.dtype_str,
                   candidate=cand.name, backend=cand.backend, note=failed.get(cand.name, ""))
        ms, spread = times.get(cand.name, (None, None))
        if ms is not None:
            gbs = io_bytes / (ms * 1e-3) / 1e9
            row.update(ms=f"{ms:.4f}", spread_pct=f"{spread:.1f}", gb_s=f"{gbs:.1f}" if gbs >= 10 else f"{gbs:.3f}",
                       roofline_pct=f"{100 * gbs / roof_gbs:.1f}")
            if peaks.get(cand.name) is not None:
                row.update(peak_extra_mib=f"{peaks[cand.name] / MIB:.1f}",
                           peak_extra_x_grad=f"{peaks[cand.name] / grad_bytes:.2f}")
            for base in BASELINES:
                if base in times:
                    row[f"speedup_vs_{base}"] = f"{times[base][0] / ms:.2f}"
        rows.append(row)
    del inputs
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows, io_bytes


def main(argv=None) -> int:
    losses = available_losses()
    parser = argparse.ArgumentParser(prog="python -m bench.run",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"),
                        help="folder for <device>.csv and <device>.png (default bench/results)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes: a smoke test")
    parser.add_argument("--loss", action="append", choices=losses,
                        help="only this loss (repeatable; default: all)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reps", type=int, default=3, help="timed runs per candidate on CPU")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    name = device_name(device)
    roof_gbs, roof_src = roofline(device, name)
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    common = {"timestamp": stamp, "commit": git_commit() or "unknown", "device": name,
              "torch": torch.__version__, "triton": triton_version(),
              "cuda": torch.version.cuda or "none"}
    timing = ("triton.testing.do_bench median" if device.type == "cuda"
              else f"perf_counter, 1 warm-up + median of {args.reps}, round-robin")
    print(f"device: {name} ({device.type}) | torch {common['torch']} | triton {common['triton']}"
          f" | CUDA {common['cuda']} | python {platform.python_version()}"
          f" | commit {common['commit']}")
    print(f"backends on {device.type}: {', '.join(fused_losses.available_backends(device))}"
          f" | auto -> {resolve_backend('auto', device.type, True)}")
    print(f"roofline: {roof_gbs:.1f} GB/s ({roof_src}) | timing: {timing}")
    print("vs <baseline>: baseline ms / this row's ms (> 1: this row is faster)")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out / f"{slug(name)}.csv", out / f"{slug(name)}.png"
    roof_note = f"roofline {roof_gbs:.1f} GB/s ({roof_src})"
    all_rows = []
    work = [(bench, case) for bench in (importlib.import_module(f"bench.bench_{loss}").BENCH
                                        for loss in args.loss or losses)
            for case in bench.cases(device, quick=args.quick)]
    started = time.perf_counter()
    for k, (bench, case) in enumerate(work, 1):
        print(f"\n[{k}/{len(work)}] {case.loss} {case.shape_str} {case.dtype_str} "
              f"(elapsed {time.perf_counter() - started:.0f} s) ...", flush=True)
        rows, io_bytes = run_case(case, bench, device, args.reps, roof_gbs, common)
        print_case(case, rows, io_bytes)
        sys.stdout.flush()
        # Appended case by case, so a run cut short keeps what it measured.
        write_csv(csv_path, [dict(r, note="; ".join(filter(None, (r["note"], roof_note))))
                             for r in rows])
        all_rows.extend(rows)
    print(f"\nappended {len(all_rows)} rows to {csv_path}")
    if not all_rows:
        print("chart skipped: no rows")
    elif plot.draw(all_rows, png_path, f"{name} | torch {common['torch']} | triton "
                   f"{common['triton']} | {stamp} | commit {common['commit']}"):
        print(f"chart: {png_path} (redraw: python -m bench.plot {csv_path})")
    else:
        print("chart skipped: matplotlib is not importable")
    return 0


if __name__ == "__main__":
    sys.exit(main())
