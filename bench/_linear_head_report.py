"""Rows, ratios, targets and files of ``bench.linear_head``.

Every ratio is computed here from the times and peaks of one run (a baseline's
ms or MiB over the row's), never from numbers of another run.
"""
from __future__ import annotations

from pathlib import Path

from ._report import write_csv

MIB = 1 << 20
# Baselines, in the order the columns show them.
BASELINES = ("unfused", "eager", "compile", "linear_cross_entropy")
SHORT = {"unfused": "unfused", "eager": "eager", "compile": "compile",
         "linear_cross_entropy": "linear_ce"}
COLUMNS = (("timestamp", "commit", "device", "cpu_capability", "torch", "triton", "cuda",
            "timing", "loss", "shape", "dtype", "positives_per_row", "candidate", "backend",
            "target_form", "ms", "spread_pct", "peak_extra_mib", "peak_x_grads",
            "peak_pct_logits", "grads_mib", "logits_fp32_mib")
           + tuple(f"speedup_vs_{SHORT[b]}" for b in BASELINES)
           + tuple(f"mem_ratio_vs_{SHORT[b]}" for b in BASELINES)
           + ("gemm_ms", "fused_over_gemm", "note"))
# (CSV column, markdown title) of the printed and written table.
TABLE = (("loss", "loss"), ("shape", "N×H×C"), ("dtype", "dtype"), ("candidate", "candidate"),
         ("target_form", "target"), ("ms", "ms"), ("spread_pct", "±%"),
         ("peak_extra_mib", "peak MiB"), ("peak_x_grads", "× grads"),
         ("peak_pct_logits", "% logits"),
         *((f"speedup_vs_{SHORT[b]}", f"speed vs {SHORT[b]}") for b in BASELINES),
         *((f"mem_ratio_vs_{SHORT[b]}", f"mem vs {SHORT[b]}") for b in BASELINES),
         ("fused_over_gemm", "÷ GEMMs"), ("note", "note"))


def _fmt(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}"


def case_rows(case, cands, times: dict, peaks: dict, notes: dict, grads_bytes: int,
              gemm_ms, common: dict) -> list:
    """One CSV row per candidate. ``times``: name -> (median ms, spread %);
    ``peaks``: name -> bytes; ``notes``: name -> why it has no numbers (or a remark)."""
    logits_bytes = case.n * case.c * 4
    rows = []
    for cand in cands:
        row = dict(common, loss=case.loss, shape=case.shape_str, dtype=case.dtype_str,
                   positives_per_row=f"{case.k_min}-{case.k_max}", candidate=cand.name,
                   backend=cand.backend, target_form=cand.target_form,
                   grads_mib=_fmt(grads_bytes / MIB, 3),
                   logits_fp32_mib=_fmt(logits_bytes / MIB, 3), note=notes.get(cand.name, ""))
        if cand.name in times:
            ms, spread = times[cand.name]
            row.update(ms=_fmt(ms, 4), spread_pct=_fmt(spread, 1))
            for base in BASELINES:
                if base in times:
                    row[f"speedup_vs_{SHORT[base]}"] = _fmt(times[base][0] / ms)
            if gemm_ms and cand.name.startswith("fused"):
                row.update(gemm_ms=_fmt(gemm_ms, 4), fused_over_gemm=_fmt(ms / gemm_ms))
        peak = peaks.get(cand.name)
        if peak is not None:
            row.update(peak_extra_mib=_fmt(peak / MIB, 3),
                       peak_x_grads=_fmt(peak / grads_bytes, 2),
                       peak_pct_logits=_fmt(100 * peak / logits_bytes, 1))
            for base in BASELINES:
                if peaks.get(base) is not None and peak > 0:
                    row[f"mem_ratio_vs_{SHORT[base]}"] = _fmt(peaks[base] / peak, 2)
        rows.append(row)
    return rows


def targets(rows: list, device_type: str) -> list:
    """(case, check, met, detail) of the issue's targets, for every fused row
    that has its baseline's numbers in the same case."""
    out: list = []
    by_case: dict = {}
    for row in rows:
        by_case.setdefault((row["loss"], row["shape"], row["dtype"]), []).append(row)
    for key, case_rows_ in by_case.items():
        name = " ".join(key)
        get = {r["candidate"]: r for r in case_rows_}
        for row in case_rows_:
            if not row["candidate"].startswith("fused") or not row.get("ms"):
                continue
            label = f"{name} {row['candidate']}"
            unf, eag = get.get("unfused", {}), get.get("eager", {})
            if device_type == "cpu":
                if unf.get("ms"):
                    met = float(row["ms"]) <= float(unf["ms"])
                    out.append((label, "time <= unfused", met,
                                f"{row['ms']} vs {unf['ms']} ms"))
                if row.get("peak_extra_mib"):
                    bound = float(row["grads_mib"]) + 0.1 * float(row["logits_fp32_mib"])
                    met = float(row["peak_extra_mib"]) <= bound
                    out.append((label, "peak <= grads + 10% of N*C*4 B", met,
                                f"{row['peak_extra_mib']} vs {bound:.1f} MiB"))
                continue
            for col, base, need, check in (
                    ("speedup_vs_unfused", unf, 1.3, ">= 1.3x unfused speed"),
                    ("speedup_vs_eager", eag, 5.0, ">= 5x eager speed"),
                    ("mem_ratio_vs_unfused", unf, 10.0, ">= 10x less peak than unfused")):
                if row.get(col):
                    out.append((label, check, float(row[col]) >= need, f"{row[col]}x"))
                elif base:
                    out.append((label, check, None, f"baseline: {base.get('note') or 'n/a'}"))
    return out


def target_lines(checks: list) -> list:
    word = {True: "met", False: "MISSED", None: "not measured"}
    return [f"- {label}: {check}: **{word[met]}** ({detail})"
            for label, check, met, detail in checks]


def markdown_table(rows: list) -> str:
    lines = ["| " + " | ".join(title for _, title in TABLE) + " |",
             "|" + "|".join("---" if key in ("loss", "shape", "dtype", "candidate",
                                            "target_form", "note") else "---:"
                            for key, _ in TABLE) + "|"]
    for row in rows:
        cells = [str(row.get(key, "") or "").replace("|", "/") for key, _ in TABLE]
        if not row.get("ms"):
            cells[5] = "OOM" if row.get("note") == "OOM" else "—"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_markdown(path: Path, header: list, rows: list, checks: list, notes: list) -> None:
    text = ["# Fused linear heads vs the unfused step (`python -m bench.linear_head`)", "",
            *header, "", markdown_table(rows), "", "## Targets", "",
            *(target_lines(checks) or ["- none measured"]), "", "## Notes", "",
            *(f"- {n}" for n in notes), ""]
    path.write_text("\n".join(text))


def append_csv(path: Path, rows: list) -> None:
    """Append ``rows`` with this table's columns (bench/_report.py's rule for a file
    written with other columns)."""
    write_csv(path, rows, COLUMNS)
