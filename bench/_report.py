"""Reporting for ``bench.run``: the printed table, the CSV file and the PNG chart."""
from __future__ import annotations

import csv
import textwrap
from pathlib import Path

COLUMNS = ("timestamp", "device", "torch", "triton", "loss", "shape", "dtype", "candidate",
           "backend", "ms", "gb_s", "roofline_pct", "peak_extra_mib", "peak_extra_x_grad",
           "speedup_vs_eager", "speedup_vs_compile", "speedup_vs_anchor", "note")
# (CSV column, title, width; negative = left-aligned): the printed table fits 120 columns.
TABLE = (("candidate", "candidate", -15), ("backend", "backend", -11), ("ms", "ms", 11),
         ("gb_s", "GB/s", 7), ("roofline_pct", "%roof", 6), ("peak_extra_mib", "peak MiB", 9),
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
            cells[5:7] = ["n/a", "n/a"]
        print(line(cells).rstrip())
    for row in rows:
        if row["note"]:
            print(textwrap.fill(f"! {row['candidate']}: {row['note']}", 120,
                                initial_indent="  ", subsequent_indent="    "))


def write_csv(path: Path, rows: list) -> None:
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerows({k: row.get(k, "") for k in COLUMNS} for row in rows)


def draw_chart(path: Path, rows: list, title: str) -> bool:
    """Grouped bars of ms per candidate per case (log scale); False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        return False
    groups = list(dict.fromkeys((r["loss"], r["shape"], r["dtype"]) for r in rows))
    names = list(dict.fromkeys(r["candidate"] for r in rows))
    ms = {(r["loss"], r["shape"], r["dtype"], r["candidate"]): float(r["ms"])
          for r in rows if r.get("ms")}
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(groups)), 4.5))
    for i, name in enumerate(names):
        # A failed candidate gets no bar (NaN) rather than a misleading zero.
        ax.bar([g + (i - (len(names) - 1) / 2) * width for g in range(len(groups))],
               [ms.get((*group, name), float("nan")) for group in groups], width, label=name)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(["\n".join(group) for group in groups], fontsize=8)
    ax.set_yscale("log")
    if ms:
        # Bars grow from well below the fastest time, so short bars stay visible.
        ax.set_ylim(bottom=min(ms.values()) / 3)
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_ylabel("forward+backward ms (log scale)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
