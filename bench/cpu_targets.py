"""The CPU targets of issue 14, measured in one run on this machine.

    python -m bench.cpu_targets [--capability avx2] [--reps 5] [--out DIR]

Cases (fp32 logits, forward + ``loss.backward()``, ``input.grad`` None before
every call, timed round-robin with ``bench.run``'s helpers):

- focal BCE at (65536, 270): float 0/1 targets (2 % ones), ``pos_weight[C]``,
  α = 0.25, γ = 2, mean; against the eager reference (``backend="torch"``) and
  its ``torch.compile``, and against the anchor (torchvision's formula with
  ``pos_weight``) eager and compiled. Target: >= 2.5× compile, >= 15× eager,
  met only if met against both versions of each.
- ASL at (65536, 270): float 0/1 targets, the paper's defaults (sum); the
  anchor is the official ASL code. Same targets.
- softmax focal (γ = 2, mean) at (65536, 270) and (1024, 32000) against
  ``F.cross_entropy``; target >= 2×. DSC at the same shapes, for the
  softmax-focal-to-DSC ratio.

Every fused case is timed twice, with the CPU gradient cache (the default,
csrc/grad_cache.h) and without it (``FUSED_LOSSES_CPU_GRAD_CACHE=0``): the
second row is what a first step, or a user who turned the cache off, gets.
``--capability`` sets ``FUSED_LOSSES_CPU_CAPABILITY`` (it can only narrow the
build the CPU runs). Appends to ``<out>/cpu-targets.csv`` and rewrites
``<out>/cpu-targets-<capability>.md`` with this run's table.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import functools
import os
import platform
from pathlib import Path

import torch
import torch.nn.functional as F

import fused_losses
from fused_losses import reference

from . import run
from ._case import Candidate
from .bench_asl import official_asl
from .bench_focal_bce import torchvision_focal

N_ML, C_ML = 65536, 270
CACHE_ENV = "FUSED_LOSSES_CPU_GRAD_CACHE"


def _multilabel(seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N_ML, C_ML, generator=gen).requires_grad_()
    t = (torch.rand(N_ML, C_ML, generator=gen) < 0.02).float()
    pw = 1.0 + 49.0 * torch.rand(C_ML, generator=gen)
    return {"input": x, "target": t, "pos_weight": pw}


def _rows(n, c, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {"input": torch.randn(n, c, generator=gen).requires_grad_(),
            "target": torch.randint(0, c, (n,), generator=gen)}


def _step(fn, inputs):
    fn(inputs).backward()


def _uncached(fn, inputs):
    os.environ[CACHE_ENV] = "0"
    try:
        fn(inputs).backward()
    finally:
        os.environ.pop(CACHE_ENV, None)


def _cands(fused, eager=None, compiled=None, anchor=None, extra=(), compiled_anchor=None):
    cands = [Candidate("fused-cpu", "cpu", functools.partial(_step, fused)),
             Candidate("fused-cpu-nocache", "cpu", functools.partial(_uncached, fused))]
    if eager is not None:
        cands.append(Candidate("eager", "torch", functools.partial(_step, eager)))
    if compiled is not None:
        cands.append(Candidate("compile", "inductor", functools.partial(_step, compiled)))
    if anchor is not None:
        cands.append(Candidate("anchor", anchor[0], functools.partial(_step, anchor[1])))
    if compiled_anchor is not None:
        cands.append(Candidate("compile-anchor", "inductor",
                               functools.partial(_step, compiled_anchor)))
    return cands + list(extra)


def cases():
    """(loss, shape, make_inputs, candidates, baselines and their targets)."""
    focal = dict(pos_weight=None, alpha=0.25, gamma=2.0)
    f_fused = lambda d: fused_losses.focal_bce(d["input"], d["target"], backend="cpu",
                                               **{**focal, "pos_weight": d["pos_weight"]})
    f_eager = lambda d: fused_losses.focal_bce(d["input"], d["target"], backend="torch",
                                               **{**focal, "pos_weight": d["pos_weight"]})
    f_comp = torch.compile(reference.focal_bce, dynamic=False)
    f_compiled = lambda d: f_comp(d["input"], d["target"], **{**focal, "pos_weight": d["pos_weight"]})
    a_fused = lambda d: fused_losses.asymmetric_loss(d["input"], d["target"], backend="cpu")
    a_eager = lambda d: fused_losses.asymmetric_loss(d["input"], d["target"], backend="torch")
    a_comp = torch.compile(reference.asl, dynamic=False)
    a_compiled = lambda d: a_comp(d["input"], d["target"])
    # The anchors (torchvision's formula with pos_weight, the official ASL code),
    # eager and compiled: plain hard-label formulas, faster to compile than the
    # library's reference, which also covers soft labels.
    tv = functools.partial(torchvision_focal, gamma=focal["gamma"], alpha=focal["alpha"])
    tv_c = torch.compile(tv, dynamic=False)
    off_c = torch.compile(official_asl, dynamic=False)
    targets = {"compile": 2.5, "compile-anchor": 2.5, "eager": 15.0, "anchor": 15.0}
    out = [("focal_bce", (N_ML, C_ML), _multilabel,
            _cands(f_fused, f_eager, f_compiled,
                   ("torchvision", lambda d: tv(d["input"], d["target"], d["pos_weight"])),
                   compiled_anchor=lambda d: tv_c(d["input"], d["target"], d["pos_weight"])),
            targets),
           ("asl", (N_ML, C_ML), _multilabel,
            _cands(a_fused, a_eager, a_compiled,
                   ("official", lambda d: official_asl(d["input"], d["target"])),
                   compiled_anchor=lambda d: off_c(d["input"], d["target"])),
            targets)]
    s_fused = lambda d: fused_losses.softmax_focal_loss(d["input"], d["target"], gamma=2.0,
                                                        backend="cpu")
    dsc = lambda d: fused_losses.self_adjusting_dice_loss(d["input"], d["target"], backend="cpu")
    ce = lambda d: F.cross_entropy(d["input"], d["target"])
    for n, c in ((N_ML, C_ML), (1024, 32000)):
        extra = [Candidate("dsc-cpu", "cpu", functools.partial(_step, dsc))]
        out.append(("softmax_focal", (n, c), functools.partial(_rows, n, c),
                    _cands(s_fused, anchor=("cross_entropy", ce), extra=extra),
                    {"anchor": 2.0}))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_targets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capability", choices=["default", "avx2", "avx512"])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    if args.capability:
        os.environ["FUSED_LOSSES_CPU_CAPABILITY"] = args.capability
    cap = torch.ops.fused_losses._cpu_capability()
    device = torch.device("cpu")
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    common = {"timestamp": stamp, "commit": run.git_commit(), "cpu": run.device_name(device),
              "capability": cap, "threads": torch.get_num_threads(), "torch": torch.__version__}
    rows = []
    for loss, shape, make, cands, targets in cases():
        inputs = make()
        for cand in cands:  # warm-up (and compile)
            run.call_once(cand.fn, inputs, device)
        failed: dict = {}
        times = run.time_candidates(cands, inputs, device, args.reps, failed)
        for name, why in failed.items():
            print(f"{loss} {name} failed: {why}")
        fused_ms = times["fused-cpu"][0]
        for name, (ms, spread) in times.items():
            row = {**common, "loss": loss, "shape": "x".join(map(str, shape)), "dtype": "float32",
                   "candidate": name, "ms": round(ms, 3), "spread_pct": round(spread, 1),
                   "fused_speedup": round(ms / fused_ms, 2), "target": ""}
            if name in targets:
                ok = ms / fused_ms >= targets[name]
                row["target"] = f">= {targets[name]}x: {'met' if ok else 'MISSED'}"
            rows.append(row)
        del inputs
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "cpu-targets.csv"
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        if new:
            writer.writeheader()
        writer.writerows(rows)
    lines = [f"# Issue-14 CPU targets: {common['cpu']}, {cap} build, "
             f"{common['threads']} threads, torch {torch.__version__}",
             "", f"{stamp}, commit {common['commit'] or '?'}, median of {args.reps} "
             f"round-robin reps, forward + backward, fp32 ({platform.machine()}).", "",
             "| loss | shape | candidate | ms | spread % | × fused-cpu time | target |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['loss']} | {r['shape']} | {r['candidate']} | {r['ms']:.1f} | "
              f"{r['spread_pct']} | {r['fused_speedup']:.2f} | {r['target']} |" for r in rows]
    (out / f"cpu-targets-{cap}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
