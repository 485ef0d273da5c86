"""CSV and markdown of ``bench.gpu_grid``: its columns, number format and table.

``target`` and ``dsc_vs_focal`` are filled for the row losses only (issue 14's
targets, ``bench._grid_rows.annotate``); the markdown then opens with a table of
those verdicts per (shape, dtype)."""
from __future__ import annotations

import csv
import math
from pathlib import Path

BASELINES = ("eager", "compile", "anchor")
COLUMNS = ("timestamp", "commit", "device", "torch", "triton", "cuda", "loss", "shape", "dtype",
           "candidate", "backend", "bench_ms", "graph_ms", "host_us", "host_syncs", "warmup_s",
           "bytes_per_elem", "step_mb", "gb_s", "copy_pct", "graph_gb_s", "graph_copy_pct",
           "copy_gb_s", "speedup_vs_eager", "speedup_vs_compile", "speedup_vs_anchor",
           "graph_speedup_vs_eager", "graph_speedup_vs_compile", "peak_extra_x_grad", "dsc_vs_focal",
           "target", "note")


def fmt(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value.is_integer() and abs(value) < 1e12:
            return str(int(value))
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.4g}"
    return "" if value is None else str(value)


def write_csv(path: Path, rows: list, columns: tuple = COLUMNS) -> None:
    """Append ``rows``; a file with other columns is moved aside to ``*.old.csv`` first."""
    if path.exists():
        with path.open(newline="") as fh:
            header = next(csv.reader(fh), [])
        if tuple(header) != tuple(columns):
            path.replace(path.with_suffix(".old.csv"))
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerows({k: fmt(r.get(k)) for k in columns} for r in rows)


MD_COLS = (("loss", "loss"), ("shape", "shape"), ("dtype", "dtype"), ("candidate", "candidate"),
           ("backend", "backend"), ("bench_ms", "do_bench ms"), ("graph_ms", "graph ms"),
           ("host_us", "host µs"), ("host_syncs", "syncs"), ("bytes_per_elem", "B/elem"),
           ("gb_s", "GB/s"), ("copy_pct", "% copy"), ("graph_gb_s", "graph GB/s"),
           ("graph_copy_pct", "graph % copy"), ("speedup_vs_eager", "vs eager"),
           ("speedup_vs_compile", "vs compile"), ("speedup_vs_anchor", "vs anchor"),
           ("graph_speedup_vs_compile", "graph vs compile"), ("target", "issue-14 target"),
           ("note", "note"))


def table(rows: list, cols) -> list:
    """Markdown table lines; ``cols`` is ((key, title), ...)."""
    lines = ["| " + " | ".join(t for _, t in cols) + " |", "|" + "---|" * len(cols)]
    return lines + ["| " + " | ".join(fmt(r.get(k)).replace("|", "/") for k, _ in cols) + " |"
                    for r in rows]


def markdown(rows: list, header: list, skipped: list) -> str:
    """The header, the best fused row per case, then every row."""
    from ._grid_rows import ROW_LOSSES, SUMMARY_COLS, annotate, summary_rows
    best = [c for c in MD_COLS if c[0] not in ("candidate", "note", "target")]
    lines = list(header)
    if any(r["loss"] in ROW_LOSSES for r in rows):
        lines += ["", "## Issue 14: row losses vs F.cross_entropy (fused = backend auto)", ""]
        lines += table(summary_rows(annotate(rows)), SUMMARY_COLS)
    lines += ["", "## Best fused backend per case (least graph ms)", ""]
    lines += table(best_fused(rows), best) + ["", "## Every row", ""] + table(rows, MD_COLS)
    if skipped:
        lines += ["", "Not measured (the stage's deadline): " + ", ".join(skipped) + "."]
    return "\n".join(lines) + "\n"


def report_header(common: dict, copy_gbs: float, cuda: bool, host_calls: int, host_trials: int,
                  cpu_reps: int) -> list:
    """The markdown's first lines: what ran where, and how each number was taken."""
    how = (f"do_bench ms: `triton.testing.do_bench` median; graph ms: median CUDA-event time "
           "of one CUDA-graph replay of the step (L2 cleared before each), device time only; "
           f"host µs: host time per step of {host_calls} steps issued with no sync (least of "
           f"{host_trials}); syncs: the step syncs the host, so its host µs includes device "
           "time and it is not captured." if cuda else
           f"CPU run (a test vehicle): ms = median of {cpu_reps} perf_counter steps; no CUDA "
           "graphs, sync check or peak memory on a CPU; host µs = the whole synchronous step.")
    return [f"# Benchmark grid: {common['device']}", "",
            f"{common['timestamp']}, commit {common['commit']}, torch {common['torch']}, "
            f"triton {common['triton']}, CUDA {common['cuda']}. Copy bandwidth "
            f"{copy_gbs:.1f} GB/s (`dst.copy_(src)`, 2 x bytes over the best of 10). A step is "
            "forward + `loss.backward()`, bool targets for the elementwise losses, int64 class "
            "indices for the row losses; B/elem is `bench.gpu_grid.step_bytes` (row losses: "
            "`bench._grid_rows.row_step_bytes`, whose 8 B per row of targets it rounds "
            "away); GB/s = those bytes / time.", "", how, "",
            "vs X: X's time / this row's (> 1: this row is faster)."]


def best_fused(rows: list) -> list:
    """Per (loss, shape, dtype), the fused row with the least graph (else do_bench) time."""
    best = {}
    for r in rows:
        t = r.get("graph_ms") or r.get("bench_ms")
        key = (r["loss"], r["shape"], r["dtype"])
        if r["candidate"].startswith("fused") and t and (
                key not in best or t < (best[key].get("graph_ms") or best[key]["bench_ms"])):
            best[key] = r
    return list(best.values())


def _num(value):
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def derive(rows: list, copy_gbs: float) -> list:
    """Fill one case's GB/s, % of copy bandwidth and speed-up columns from its
    ``bench_ms``, ``graph_ms`` and ``step_bytes`` (rows of one case only)."""
    by_name = {r["candidate"]: r for r in rows}
    for r in rows:
        for t_key, g_key, p_key in (("bench_ms", "gb_s", "copy_pct"),
                                    ("graph_ms", "graph_gb_s", "graph_copy_pct")):
            ms = _num(r.get(t_key))
            if ms:
                gbs = r["step_bytes"] / (ms * 1e-3) / 1e9
                r[g_key], r[p_key] = gbs, 100.0 * gbs / copy_gbs
        for prefix, t_key, bases in (("", "bench_ms", BASELINES),
                                     ("graph_", "graph_ms", ("eager", "compile"))):
            ms = _num(r.get(t_key))
            for base in bases:
                other = _num(by_name.get(base, {}).get(t_key))
                if ms and other:
                    r[f"{prefix}speedup_vs_{base}"] = other / ms
    return rows
