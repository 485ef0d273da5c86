"""Reporting for ``bench.run``: the printed table, the CSV file and the PNG chart."""
from __future__ import annotations

import csv
import io
import textwrap
from pathlib import Path

COLUMNS = ("timestamp", "commit", "device", "torch", "triton", "cuda", "loss", "shape", "dtype",
           "candidate", "backend", "ms", "spread_pct", "gb_s", "roofline_pct", "peak_extra_mib", "peak_extra_x_grad",
           "speedup_vs_eager", "speedup_vs_compile", "speedup_vs_anchor", "note")
# (CSV column, title, width; negative = left-aligned): the printed table fits 120 columns.
TABLE = (("candidate", "candidate", -15), ("backend", "backend", -11), ("ms", "ms", 10),
         ("spread_pct", "±%", 5), ("gb_s", "GB/s", 7), ("roofline_pct", "%roof", 6), ("peak_extra_mib", "peak MiB", 9),
         ("peak_extra_x_grad", "x grad", 7), ("speedup_vs_eager", "vs eager", 9),
         ("speedup_vs_compile", "vs compile", 11), ("speedup_vs_anchor", "vs anchor", 10))


def print_case(case, rows: list, io_bytes: int) -> None:
    """One block per case: a title line, a row per candidate, then any failures in full."""
    def line(cells):
        return "  " + " ".join(f"{c:{'<' if w < 0 else '>'}{abs(w)}}"
                               for c, (_, _, w) in zip(cells, TABLE))
    print(f"\n{case.loss}  {case.shape_str}  {case.dtype_str}  "
          f"({io_bytes / 1e6:.1f} MB read+written per call)")
    print(line([title for _, title, _ in TABLE]))
    for row in rows:
        failed = not row.get("ms")
        cells = [row.get(key, "") for key, _, _ in TABLE]
        if failed:
            cells[2] = "failed"
        elif not row.get("peak_extra_mib"):
            cells[6:8] = ["n/a", "n/a"]
        print(line(cells).rstrip())
    for row in rows:
        if row["note"]:
            print(textwrap.fill(f"! {row['candidate']}: {row['note']}", 120,
                                initial_indent="  ", subsequent_indent="    "))


def write_csv(path: Path, rows: list, columns: tuple = COLUMNS) -> None:
    """Append ``rows``; a file written with other columns is rewritten with these
    (old rows keep their values, new columns stay empty for them)."""
    old = []
    if path.exists():
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            if tuple(reader.fieldnames or ()) != columns:
                old = list(reader)
    if old:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: row.get(k) or "" for k in columns} for row in old)
        path.write_text(buf.getvalue())
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerows({k: row.get(k, "") for k in columns} for row in rows)


def read_csv(path: Path) -> list:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))
