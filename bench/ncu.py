"""Nsight Compute counters of the hot kernels, for ``make gpu-check`` (issue 13).

``python -m bench.ncu [--out DIR] [--timeout S]`` runs ``ncu`` on this module's
driver and writes ``<out>/<device-slug>-ncu.csv`` (appended) and ``-ncu.md``,
keeping ncu's own output in ``-ncu-raw.csv`` and ``-ncu.log``.
``python -m bench.ncu --parse RAW PLAN [--out DIR]`` parses a kept output again.
``python -m bench.ncu --drive PLAN`` is the workload (what ncu launches).

The kernels, at (262144, 270), fp32 logits (``--dtype bfloat16`` adds bf16),
bool targets: the forward of focal BCE (bench_focal_bce's options) and ASL
(defaults) on each GPU backend, called with ``requires_grad`` logits and no
backward, so one launch is the whole fused step (it writes the gradient); then
the shared backward scale kernel (``fused_losses::scale_grad_``, CUDA, and its
Triton twin) with factor 2 (reads and writes the gradient), and the CUDA one
with factor 1 (returns at once). Each runs twice after two warm-up calls, in a
``cudaProfilerStart/Stop`` window (``--profile-from-start off``), so JIT and
first-call costs stay out; ``--kernel-name`` (KERNELS) keeps the reductions out.
ncu runs with ``--clock-control none``: the clocks the grid ran at.

Per launch, from METRICS: ``duration_us``; ``dram_read_mb``/``dram_write_mb``;
``dram_b_per_elem`` (read + write over numel) next to ``model_b_per_elem``
(``gpu_grid.step_bytes`` for a forward, 2 x element size for a scale);
``dram_gb_s`` = DRAM bytes / duration; ``inst_per_elem`` =
``smsp__inst_executed.sum`` x 32 / numel (thread slots of the warp
instructions: an upper bound where warps are partial) and
``thread_inst_per_elem`` = ``smsp__thread_inst_executed.sum`` / numel (the
budget is ~62-70 per element at 9 B/elem on an H200); ``issue_busy_pct`` =
``sm__inst_issued`` and ``issue_active_pct`` = ``smsp__issue_active`` as % of
peak sustained active. Launches are matched to the driver's plan by kind
(forward, scale) in launch order; the markdown averages each label's launches.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ._grid_report import table, write_csv
from .run import git_commit, slug

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (262144, 270)
CALLS = 2
KERNELS = r"regex:.*(_focal_bce|_asl|_elementwise_fwd|scale_grad).*"
METRICS = ("gpu__time_duration.sum", "dram__bytes_read.sum", "dram__bytes_write.sum",
           "dram__throughput.avg.pct_of_peak_sustained_elapsed", "smsp__inst_executed.sum",
           "smsp__thread_inst_executed.sum", "sm__inst_issued.avg.pct_of_peak_sustained_active",
           "smsp__issue_active.avg.pct_of_peak_sustained_active",
           "sm__throughput.avg.pct_of_peak_sustained_elapsed",
           "sm__warps_active.avg.pct_of_peak_sustained_active", "launch__registers_per_thread",
           "launch__grid_size", "launch__block_size")
# If ncu refuses a name in METRICS (versions differ), one retry with these.
CORE_METRICS = METRICS[:5]
COLUMNS = ("timestamp", "commit", "device", "label", "kind", "loss", "backend", "dtype", "numel",
           "launch_id", "kernel", "duration_us", "dram_read_mb", "dram_write_mb",
           "dram_b_per_elem", "model_b_per_elem", "dram_gb_s", "dram_pct_peak", "inst_per_elem",
           "thread_inst_per_elem", "issue_busy_pct", "issue_active_pct", "sm_pct",
           "occupancy_pct", "registers", "grid", "block", "note")
MD_COLS = (("label", "kernel"), ("launches", "launches"), ("duration_us", "µs"),
           ("dram_read_mb", "DRAM read MB"), ("dram_write_mb", "DRAM write MB"),
           ("dram_b_per_elem", "DRAM B/elem"), ("model_b_per_elem", "model B/elem"),
           ("dram_gb_s", "GB/s"), ("dram_pct_peak", "% DRAM peak"),
           ("inst_per_elem", "inst/elem (warp x 32)"), ("thread_inst_per_elem", "thread inst/elem"),
           ("issue_busy_pct", "issue busy %"), ("issue_active_pct", "issue active %"),
           ("sm_pct", "SM %"), ("occupancy_pct", "occupancy %"), ("registers", "regs"),
           ("note", "note"))
_PREFIX = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "n": 1e-9, "u": 1e-6, "m": 1e-3}


def to_base(value: str, unit: str):
    """ncu's printed value in base units (bytes; nanoseconds for times), or None.
    Thousands separators go; "n/a" and empty cells are None."""
    text = (value or "").strip().replace(",", "")
    try:
        number = float(text)
    except ValueError:
        return None
    unit = (unit or "").strip()
    for base, scale in (("byte", 1.0), ("second", 1e9)):
        if unit.endswith(base) and unit[:-len(base)] in _PREFIX:
            return number * _PREFIX[unit[:-len(base)]] * scale
    if unit in ("ns", "us", "ms", "s"):
        return number * {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}[unit]
    return number


def parse_raw(text: str) -> list:
    """Kernel launches of ``ncu --csv`` output, in launch order: [{id, kernel, block,
    grid, metrics: {name: value in base units}}]. Takes the raw page (one column per
    metric, then a units row) or the details page (one row per metric); lines before
    the header (the program's output, ==PROF== lines) are skipped."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith('"ID"')), None)
    if start is None:
        return []
    reader = csv.reader(lines[start:])
    header = next(reader)
    body = [r for r in reader if len(r) == len(header)]
    launches = {}
    if "Metric Name" in header:  # the details page: one row per (launch, metric)
        for r in body:
            rec = dict(zip(header, r))
            if rec["ID"].strip().isdigit():
                launch = launches.setdefault(int(rec["ID"]), _launch(rec))
                launch["metrics"][rec["Metric Name"]] = to_base(rec["Metric Value"],
                                                                rec.get("Metric Unit", ""))
        return [launches[k] for k in sorted(launches)]
    units = dict(zip(header, body[0])) if body and not body[0][0].strip() else {}
    for r in body:
        rec = dict(zip(header, r))
        if rec["ID"].strip().isdigit():
            launch = launches.setdefault(int(rec["ID"]), _launch(rec))
            launch["metrics"].update({k: to_base(v, units.get(k, "")) for k, v in rec.items()
                                      if "__" in k})
    return [launches[k] for k in sorted(launches)]


def _launch(rec: dict) -> dict:
    return {"id": int(rec["ID"]), "kernel": rec.get("Kernel Name", ""),
            "block": rec.get("Block Size", ""), "grid": rec.get("Grid Size", ""), "metrics": {}}


def short_name(kernel_name: str) -> str:
    """The demangled name without its return type and trailing parameter list."""
    name, depth = kernel_name.strip(), 0
    if name.endswith(")"):
        for i in range(len(name) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(name[i], 0)
            if depth == 0:
                name = name[:i]
                break
    return name.removeprefix("void ")[:120]


def kind_of(kernel_name: str) -> str:
    return "scale" if "scale_grad" in kernel_name else "fwd"


def attribute(launches: list, plan: dict) -> list:
    """One row per launch, matched to the plan's entries of its kind in order;
    planned entries that never showed up get a row saying so."""
    queues = {}
    for entry in plan.get("entries", []):
        queues.setdefault(entry["kind"], []).append(entry)
    rows = []
    for launch in launches:
        queue = queues.get(kind_of(launch["kernel"]), [])
        entry = queue.pop(0) if queue else {"label": "unplanned", "kind": kind_of(
            launch["kernel"]), "numel": plan.get("numel")}
        rows.append(derive(launch, entry))
    for queue in queues.values():
        rows += [dict(entry, note="not profiled (no matching launch)") for entry in queue]
    return rows


def derive(launch: dict, entry: dict) -> dict:
    m, numel = launch["metrics"], entry.get("numel") or 0
    row = {k: v for k, v in entry.items() if k != "expect"}
    row.update(launch_id=launch["id"], kernel=short_name(launch["kernel"]), note="",
               grid=m.get("launch__grid_size") or launch["grid"],
               block=m.get("launch__block_size") or launch["block"],
               registers=m.get("launch__registers_per_thread"),
               dram_pct_peak=m.get("dram__throughput.avg.pct_of_peak_sustained_elapsed"),
               issue_busy_pct=m.get("sm__inst_issued.avg.pct_of_peak_sustained_active"),
               issue_active_pct=m.get("smsp__issue_active.avg.pct_of_peak_sustained_active"),
               sm_pct=m.get("sm__throughput.avg.pct_of_peak_sustained_elapsed"),
               occupancy_pct=m.get("sm__warps_active.avg.pct_of_peak_sustained_active"))
    if entry.get("expect") and entry["expect"] not in launch["kernel"]:
        row["note"] = f"expected a kernel named like {entry['expect']!r}"
    ns, rd, wr = (m.get(k) for k in ("gpu__time_duration.sum", "dram__bytes_read.sum",
                                     "dram__bytes_write.sum"))
    if ns:
        row["duration_us"] = ns / 1e3
    if rd is not None and wr is not None:
        row.update(dram_read_mb=rd / 1e6, dram_write_mb=wr / 1e6)
        if numel:
            row["dram_b_per_elem"] = (rd + wr) / numel
        if ns:
            row["dram_gb_s"] = (rd + wr) / ns  # bytes per ns = GB/s
    if numel and m.get("smsp__inst_executed.sum") is not None:
        row["inst_per_elem"] = m["smsp__inst_executed.sum"] * 32 / numel
    if numel and m.get("smsp__thread_inst_executed.sum") is not None:
        row["thread_inst_per_elem"] = m["smsp__thread_inst_executed.sum"] / numel
    return row


def summary(rows: list) -> list:
    """One row per label: the mean of its launches' numbers, their count, the first note."""
    out = {}
    for r in rows:
        s = out.setdefault(r["label"], {"label": r["label"], "launches": 0, "note": "", "_n": {}})
        s["launches"] += 1 if r.get("launch_id") is not None else 0
        s["note"] = s["note"] or r.get("note", "")
        for key, _ in MD_COLS[2:-1]:
            if isinstance(r.get(key), (int, float)):
                s["_n"].setdefault(key, []).append(float(r[key]))
    for s in out.values():
        s.update({k: sum(v) / len(v) for k, v in s.pop("_n").items()})
    return list(out.values())


def write_results(rows: list, plan: dict, out: Path, slug: str, extra: list) -> Path:
    common = {"timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"), "commit": git_commit(),
        "device": plan.get("device", "")}
    if rows:
        write_csv(out / f"{slug}-ncu.csv", [dict(common, **r) for r in rows], COLUMNS)
    md = [f"# Nsight Compute: {common['device'] or 'no device'}", "",
          f"{common['timestamp']}; shape {plan.get('shape', SHAPE)}, {plan.get('calls', CALLS)} launches "
          "per kernel; `ncu --clock-control none`. inst/elem = smsp__inst_executed x 32 / "
          "numel; thread inst/elem = smsp__thread_inst_executed / numel; issue busy/active = "
          "sm__inst_issued / smsp__issue_active, % of peak sustained active; GB/s = DRAM "
          "read + write bytes / duration. See `bench/ncu.py`.", ""]
    md += table(summary(rows), MD_COLS) if rows else ["No kernel was profiled."]
    md += [""] + extra + [f"- plan problem: {p}" for p in plan.get("problems", [])]
    path = out / f"{slug}-ncu.md"
    path.write_text("\n".join(md) + "\n")
    return path


def drive(plan_path: Path, dtypes: list, device: str = "cuda", shape=SHAPE,
          calls: int = CALLS) -> int:
    """The profiled workload; writes the plan of what it launched (``device="cpu"``
    runs the same windows on the C++ CPU kernels, unprofiled: a test of the plan)."""
    import torch
    import fused_losses
    from fused_losses._backend import _EXT_HAS_CUDA, _EXT_PROBLEM
    from .bench_asl import BENCH as ASL
    from .bench_focal_bce import BENCH as FOCAL
    from .gpu_grid import step_bytes
    device, numel = torch.device(device), shape[0] * shape[1]
    cuda = device.type == "cuda"
    plan = {"device": torch.cuda.get_device_name() if cuda else "cpu", "shape": list(shape),
            "numel": numel, "calls": calls, "entries": [], "problems": []}
    plan_path.write_text(json.dumps(plan))
    windows = []
    for dtype, name in ((getattr(torch, d), d) for d in dtypes):
        size = torch.tensor([], dtype=dtype).element_size()
        for bench in (FOCAL, ASL):
            inputs = bench.make_inputs(tuple(shape), dtype, device)
            others = {k: v for k, v in inputs.items() if k not in ("input", "target")}
            for backend in bench.native_backends(device):
                def fwd(b=bench, i=inputs, o=others, backend=backend):
                    b.fused(i["input"], i["target"], **o, **b.options, backend=backend)
                windows.append((fwd, dict(
                    label=f"{bench.loss} fwd {backend} {name}", kind="fwd", loss=bench.loss,
                    backend=backend, dtype=name, numel=numel,
                    model_b_per_elem=step_bytes(bench.loss, 1, size),
                    expect="_elementwise_fwd" if backend == "cuda" else f"_{bench.loss}")))
        grad = torch.randn(shape, device=device).to(dtype)
        two, one = (torch.tensor([f], device=device) for f in (2.0, 1.0))
        scales = []
        if _EXT_HAS_CUDA if cuda else _EXT_PROBLEM is None:
            scales.append((device.type, torch.ops.fused_losses.scale_grad_))
        if cuda and "triton" in fused_losses.available_backends("cuda"):
            from fused_losses.triton._scale import scale_grad_
            scales.append(("triton", scale_grad_))
        for (backend, op), factor in [(s, two) for s in scales] + [(s, one) for s in scales[:1]]:
            f = float(factor)
            # scale_grad_(grad, grad_output, scale): the factor is their product.
            windows.append((lambda op=op, factor=factor: op(grad, factor, one), dict(
                label=f"scale_grad x{f:g} {backend} {name}", kind="scale", loss="",
                backend=backend, dtype=name, numel=numel,
                model_b_per_elem=2 * size if f != 1.0 else 0)))
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for fn, entry in windows:
        try:
            fn()
            fn()  # warm-up: JIT, lazy module loading
            sync()
            if cuda:
                torch.cuda.profiler.start()
            try:
                for _ in range(calls):
                    fn()
                sync()
            finally:
                if cuda:
                    torch.cuda.profiler.stop()
            plan["entries"] += [entry] * calls
        except Exception as exc:  # noqa: BLE001 - the other kernels still get profiled
            plan["problems"].append(f"{entry['label']}: {type(exc).__name__}: {exc}"[:300])
            print(f"! {plan['problems'][-1]}", file=sys.stderr)
        plan_path.write_text(json.dumps(plan, indent=1))  # after each: ncu may be stopped
    return 0


def find_ncu() -> str | None:
    found = shutil.which("ncu")
    for cand in ([found] if found else []) + [
            os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "ncu"),
            "/usr/local/cuda/bin/ncu"] + sorted(map(str, Path("/opt/nvidia").glob(
                "nsight-compute/*/ncu")), reverse=True):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def run_ncu(ncu: str, metrics, plan: Path, raw: Path, log: Path, dtypes, timeout: float) -> int:
    """ncu on the driver; its stdout (the CSV) to ``raw``, stderr to ``log``; rc or 124."""
    cmd = [ncu, "--clock-control", "none", "--profile-from-start", "off",
           "--target-processes", "all", "--kernel-name", KERNELS, "--launch-count", "64",
           "--metrics", ",".join(metrics), "--csv", "--page", "raw", "--print-units", "base",
           sys.executable, "-m", "bench.ncu", "--drive", str(plan)]
    cmd += [a for d in dtypes for a in ("--dtype", d)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), PYTHONUNBUFFERED="1")
    with raw.open("w") as out, log.open("a") as err:
        err.write("$ " + " ".join(cmd) + "\n")
        err.flush()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT, env=env,
                                start_new_session=True)
        try:
            return proc.wait(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            err.write(f"\n!! ncu stopped after {timeout:.0f} s\n")
            return 124
        finally:  # also on KeyboardInterrupt: ncu runs in its own session, so end it here
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if proc.poll() is not None:
                    break
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=3)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ncu",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--timeout", type=float, default=75.0, help="seconds for ncu in all")
    parser.add_argument("--dtype", action="append", choices=("float32", "bfloat16"))
    parser.add_argument("--drive", metavar="PLAN", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # --drive only
    parser.add_argument("--shape", default="x".join(map(str, SHAPE)), help=argparse.SUPPRESS)
    parser.add_argument("--parse", nargs=2, metavar=("RAW", "PLAN"))
    args = parser.parse_args(argv)
    dtypes = args.dtype or ["float32"]
    if args.drive:
        return drive(Path(args.drive), dtypes, args.device,
                     [int(v) for v in args.shape.split("x")])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.parse:
        raw, plan_path = Path(args.parse[0]), Path(args.parse[1])
        plan = json.loads(plan_path.read_text()) if plan_path.exists() else {}
        rows = attribute(parse_raw(raw.read_text()), plan)
        print(write_results(rows, plan, out, slug(plan.get("device") or "unknown-gpu"), []))
        return 0
    started = time.monotonic()
    tmp_plan, tmp_raw, log = out / "ncu-plan.json", out / "ncu-raw.tmp.csv", out / "ncu.tmp.log"
    log.write_text("")
    ncu, notes, rows, plan = find_ncu(), [], [], {}
    if not ncu:
        notes.append("- ncu not found (PATH, $CUDA_HOME/bin, /usr/local/cuda/bin, /opt/nvidia)")
    for metrics in ((METRICS, CORE_METRICS) if ncu else ()):
        left = args.timeout - (time.monotonic() - started)
        if left < 20:
            notes.append(f"- no time left for ncu with {len(metrics)} metrics")
            break
        tmp_plan.unlink(missing_ok=True)
        rc = run_ncu(ncu, metrics, tmp_plan, tmp_raw, log, dtypes, left)
        plan = json.loads(tmp_plan.read_text()) if tmp_plan.exists() else {}
        launches = parse_raw(tmp_raw.read_text())
        notes.append(f"- ncu rc {rc} with {len(metrics)} metrics: {len(launches)} launches")
        rows = attribute(launches, plan)
        text = log.read_text(errors="replace") + tmp_raw.read_text(errors="replace")
        if launches or rc == 124 or "ERR_NVGPUCTRPERM" in text:
            break  # a missing permission or the time limit will not change on a retry
    text = log.read_text(errors="replace") + (tmp_raw.read_text(errors="replace")
                                              if tmp_raw.exists() else "")
    notes += ["- " + line.strip()[:200] for line in text.splitlines()
              if ("==ERROR==" in line or "==WARNING==" in line or line.startswith("!"))][:12]
    name = slug(plan.get("device") or "unknown-gpu")
    for tmp, final in ((tmp_raw, f"{name}-ncu-raw.csv"), (log, f"{name}-ncu.log"),
                       (tmp_plan, f"{name}-ncu-plan.json")):
        if tmp.exists():
            tmp.replace(out / final)
    path = write_results(rows, plan, out, name, notes)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
