"""Fused linear heads (issue 15) vs the unfused step: ``python -m bench.linear_head
[--quick] [--reps K] [--out DIR] [--deadline-s S] [--no-compile]``.

Per case, ``input [N, H]``, ``weight [C, H]``, ``bias [C]`` (leaves) and ~K
positives per row, one forward + ``loss.backward()`` (the three grads set to
None before every call) of:

- ``fused``: ``linear_focal_bce`` (backend auto) on padded ``[N, K]`` targets
  (``fused-csr``: the same on a sparse CSR target, first case of a device);
- ``unfused``: ``F.linear`` + ``fused_losses.focal_bce`` on a dense bool target;
- ``eager``: ``F.linear`` + torchvision's sigmoid focal formula
  (``bench.bench_focal_bce.torchvision_focal``, pos_weight None) on a dense
  target in the input's dtype; ``compile``: ``torch.compile`` of that step;
- ``linear_cross_entropy``: torch's ``F.linear_cross_entropy`` on one class
  per row, a softmax-side time/memory reference only (a different loss);
- ASL case: ``linear_asymmetric_loss`` vs ``F.linear`` + ``asymmetric_loss``.

Time: CPU median of ``--reps`` round-robin runs after one warm-up
(``time.perf_counter``); CUDA ``triton.testing.do_bench``. Peak extra memory:
CPU ``bench/_memory.py``; CUDA ``max_memory_allocated`` minus allocated before.
On CUDA the three GEMMs of the step (x@W.T, G.T@x, G@W) are timed alone too.
Prints a markdown table and the targets; writes ``<out>/linear-head-<device>.md``
and appends to ``<out>/linear-head-<device>.csv``.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from . import _linear_head_report as report
from ._linear_head_cases import Case, Candidate, Inputs, candidates, cases  # noqa: F401
from ._memory import cpu_peak_extra_bytes
from .run import device_name, git_commit, short_error, slug, triton_version

# torch.compile on the CPU: ~15 s of inductor work on this 2-core box, then one
# compiled call at ~0.5x the eager call; skipped where the sum would pass ~60 s.
CPU_COMPILE_S, CPU_COMPILE_LIMIT_S = 15.0, 60.0
CUDA_COMPILE_S = 45.0  # left of the deadline for a compile to start on a GPU


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def call_once(cand: Candidate, inp: Inputs) -> float:
    inp.zero_grads()
    sync(inp.x.device)
    start = time.perf_counter()
    cand.fn()
    sync(inp.x.device)
    return time.perf_counter() - start


def failure(exc: BaseException, device) -> str:
    if isinstance(exc, torch.OutOfMemoryError):
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return "OOM"
    return short_error(exc)


def peak_bytes(cand: Candidate, inp: Inputs) -> int:
    inp.zero_grads()
    gc.collect()
    dev = inp.x.device
    if dev.type == "cpu":
        return cpu_peak_extra_bytes(cand.fn)
    sync(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    before = torch.cuda.memory_allocated(dev)
    cand.fn()
    sync(dev)
    return torch.cuda.max_memory_allocated(dev) - before


def gemm_ms(case: Case, inp: Inputs) -> float:
    """do_bench of x@W.T ([N, C]), G.T@x ([C, H]) and G@W ([N, H]) at the case's shapes."""
    import triton.testing
    x, w = inp.x.detach(), inp.w.detach()
    g = torch.randn(case.n, case.c, device=x.device, dtype=case.dtype)
    total = sum(triton.testing.do_bench(f) for f in (lambda: x @ w.T, lambda: g.T @ x,
                                                     lambda: g @ w))
    del g
    return total


def measure(case: Case, inp: Inputs, cands: list, reps: int, deadline: float) -> tuple:
    """(times, peaks, notes, gemm ms) of one case; a skip, failure or OOM is a note."""
    dev = case.device
    failed = {c.name: c.skip for c in cands if c.skip}
    info: dict = {}
    warm: dict = {}
    for cand in cands:
        if cand.name in failed:
            continue
        left = deadline - time.perf_counter()
        if cand.name == "compile":
            est = (CPU_COMPILE_S + 0.5 * warm.get("eager", math.inf) if dev.type == "cpu"
                   else CUDA_COMPILE_S)
            if dev.type == "cpu" and est > CPU_COMPILE_LIMIT_S:
                failed[cand.name] = (f"skipped: compile + first call estimated at {est:.0f} s "
                                     f"(> {CPU_COMPILE_LIMIT_S:.0f} s on this CPU)")
                continue
            if left < est:
                failed[cand.name] = f"skipped: deadline ({left:.0f} s left, compile ~{est:.0f} s)"
                continue
        if left <= 0:
            failed[cand.name] = "skipped: deadline"
            continue
        try:
            warm[cand.name] = call_once(cand, inp)  # compiles, autotunes, faults pages in
        except Exception as exc:  # one broken candidate must not end the run
            failed[cand.name] = failure(exc, dev)
        print(f"  warm-up {cand.name}: " + (f"{warm[cand.name]:.2f} s" if cand.name in warm
                                           else failed[cand.name]), flush=True)
    if "compile" in warm:
        info["compile"] = f"compile + first call {warm['compile']:.1f} s"
    live = [c for c in cands if c.name in warm]
    samples: dict = {c.name: [] for c in live}
    for rep in range(1 if dev.type == "cuda" else reps):
        for cand in live:  # round-robin: a load change slows every candidate alike
            if cand.name in failed:
                continue
            try:
                if dev.type == "cuda":
                    import triton.testing
                    samples[cand.name] = triton.testing.do_bench(
                        cand.fn, grad_to_none=list(inp.params), quantiles=[0.5, 0.2, 0.8])
                else:
                    samples[cand.name].append(1e3 * call_once(cand, inp))
            except Exception as exc:
                failed[cand.name] = failure(exc, dev)
        if dev.type == "cpu":
            print(f"  rep {rep + 1}: " + ", ".join(f"{n} {s[-1]:.0f} ms" for n, s in
                                                    samples.items() if s), flush=True)
    times, peaks = {}, {}
    for cand in live:
        s = samples[cand.name]
        if not s or cand.name in failed:
            continue
        mid = s[0] if dev.type == "cuda" else statistics.median(s)
        times[cand.name] = (mid, 100 * (max(s) - min(s)) / 2 / mid)
        try:
            peaks[cand.name] = peak_bytes(cand, inp)
        except Exception as exc:
            info[cand.name] = "peak: " + failure(exc, dev)
    gemm = None
    if dev.type == "cuda" and time.perf_counter() < deadline:
        try:
            gemm = gemm_ms(case, inp)
        except Exception as exc:
            info["fused"] = "GEMMs alone: " + failure(exc, dev)
    inp.zero_grads()
    return times, peaks, {**info, **failed}, gemm


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.linear_head",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes: a smoke test")
    parser.add_argument("--reps", type=int, default=3, help="timed runs per candidate on CPU")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--deadline-s", type=float, default=math.inf,
                        help="start no measurement after this many seconds (gpu-check)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    deadline = started + args.deadline_s
    device = torch.device(args.device)
    if args.quick and device.type == "cpu":
        # A smoke test: on a busy 2-core box OpenMP's spinning threads make each of the
        # fused loop's many small parallel regions wait a time slice (~100x slower).
        torch.set_num_threads(1)
    name = device_name(device)
    cap = torch.ops.fused_losses._cpu_capability() if device.type == "cpu" else ""
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    timing = ("triton.testing.do_bench median" if device.type == "cuda"
              else f"perf_counter, 1 warm-up + median of {args.reps} round-robin")
    common = dict(timestamp=stamp, commit=git_commit() or "unknown", device=name,
                  cpu_capability=cap, torch=torch.__version__, triton=triton_version(),
                  cuda=torch.version.cuda or "none", timing=timing)
    header = [f"device: {name}" + (f" (CPU capability {cap}, {torch.get_num_threads()} threads)"
                                   if cap else "")
              + f" | torch {common['torch']} | triton {common['triton']} | CUDA {common['cuda']}"
              f" | commit {common['commit']} | {stamp}",
              f"timing: {timing}; one forward + loss.backward(), the grads of input, weight and"
              " bias set to None before every call; peak: extra bytes allocated during the call",
              "speed vs X = X's ms / this row's ms; mem vs X = X's peak / this row's peak "
              "(> 1: this row is better); × grads: peak / (grad_input + grad_weight + "
              "grad_bias bytes); % logits: peak / N·C·4 bytes"
              + ("; --quick: tiny shapes, 1 thread, a smoke test" if args.quick else "")]
    print("\n".join(header), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = out / f"linear-head-{slug(name)}"
    rows: list = []
    notes = ["linear_cross_entropy is softmax cross-entropy over one class per row "
             "(torch's F.linear_cross_entropy): a time/memory reference, not the same loss. "
             "On a CPU it runs with LinearCrossEntropyOptions(batch_chunk_size=<rows whose "
             "fp32 logits take 5 % of N·C·4 B, at most 32 MiB>): the default options take "
             "1 row per chunk there (minutes per call at C = 200000); on a GPU the defaults.",
             "eager = F.linear + torchvision's sigmoid_focal_loss formula (gamma 2, alpha 0.25, "
             "no pos_weight) on a dense target in the input's dtype; unfused = F.linear + "
             "fused_losses.focal_bce (or asymmetric_loss) on a dense bool target."]
    if device.type == "cuda":
        notes.append("÷ GEMMs: the fused row's time over the three GEMMs of the step "
                     "(x@W.T, G.T@x, G@W) timed alone in the same run.")
    for case in cases(device, args.quick):
        print(f"\n{case.loss} {case.shape_str} {case.dtype_str}, {case.k_min}-{case.k_max} "
              f"positives/row (elapsed {time.perf_counter() - started:.0f} s) ...", flush=True)
        if time.perf_counter() > deadline:
            notes.append(f"not measured (deadline): {case.loss} {case.shape_str}")
            continue
        inp = Inputs(case)
        cands = candidates(case, inp, args.no_compile, args.quick)
        times, peaks, case_notes, gemm = measure(case, inp, cands, args.reps, deadline)
        grads = sum(p.numel() * p.element_size() for p in inp.params)
        new = report.case_rows(case, cands, times, peaks, case_notes, grads, gemm, common)
        del inp, cands
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(report.markdown_table(new), flush=True)
        report.append_csv(base.with_suffix(".csv"), new)  # case by case: a cut run keeps it
        rows += new
        checks = report.targets(rows, device.type)
        report.write_markdown(base.with_suffix(".md"), header, rows, checks, notes)
    checks = report.targets(rows, device.type)
    title = "targets" + (" (--quick: tiny shapes, not the issue's cases)" if args.quick else "")
    print(f"\n{title}:\n" + "\n".join(report.target_lines(checks) or ["- none measured"]))
    report.write_markdown(base.with_suffix(".md"), header, rows, checks, notes)
    print(f"\nwrote {base.with_suffix('.md')}; appended {len(rows)} rows to "
          f"{base.with_suffix('.csv')} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
