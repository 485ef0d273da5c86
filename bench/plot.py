"""Chart of a benchmark CSV: ``python -m bench.plot [bench/results/<device>.csv ...]``.

For the latest run in each CSV (its newest timestamp) it draws
``<same name>.png`` with two panels:

- speed-up of every fused candidate against each baseline (eager reference,
  ``torch.compile`` of it, the anchor formula), grouped by (loss, shape, dtype),
  on a log scale with the 1× line marked;
- peak extra memory of every candidate as a multiple of the gradient's size.

Without arguments it redraws every CSV under ``bench/results/``.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ._report import read_csv

BASELINES = (("speedup_vs_eager", "vs eager"), ("speedup_vs_compile", "vs torch.compile"),
             ("speedup_vs_anchor", "vs anchor"))


def latest_run(rows: list) -> list:
    newest = max((r["timestamp"] for r in rows), default=None)
    return [r for r in rows if r["timestamp"] == newest]


def _case(row) -> tuple:
    return row["loss"], row["shape"], row["dtype"]


def _bars(ax, groups, series, ylabel):
    """series: [(label, {group: value})]; NaN (no bar) where a value is missing."""
    width = 0.8 / max(len(series), 1)
    for i, (label, values) in enumerate(series):
        ax.bar([g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))],
               [values.get(group, float("nan")) for group in groups], width, label=label)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(["\n".join(group) for group in groups], fontsize=7)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def draw(rows: list, png: Path, title: str) -> bool:
    """Draw the two panels for ``rows`` (one run); False when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError:
        return False
    groups = list(dict.fromkeys(_case(r) for r in rows))
    fused = list(dict.fromkeys(r["candidate"] for r in rows if r["candidate"].startswith("fused")))
    speed = [(f"{name} {label}", {_case(r): float(r[key]) for r in rows
                                  if r["candidate"] == name and r.get(key)})
             for name in fused for key, label in BASELINES]
    memory = [(name, {_case(r): float(r["peak_extra_x_grad"]) for r in rows
                      if r["candidate"] == name and r.get("peak_extra_x_grad")})
              for name in dict.fromkeys(r["candidate"] for r in rows)]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(7.0, 1.6 * len(groups)), 8.5))
    _bars(top, groups, [s for s in speed if s[1]], "speed-up (baseline ms / fused ms, log)")
    top.set_yscale("log")
    top.axhline(1.0, color="black", linewidth=0.8)
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    top.yaxis.set_major_formatter(plain)
    top.yaxis.set_minor_formatter(plain)
    top.tick_params(axis="y", which="minor", labelsize=6)
    top.set_title(title, fontsize=9)
    _bars(bottom, groups, [m for m in memory if m[1]], "peak extra memory (× gradient size)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return True


def plot_csv(csv_path: Path) -> Path | None:
    rows = latest_run(read_csv(csv_path))
    if not rows:
        return None
    first = rows[0]
    title = (f"{first['device']} | torch {first['torch']} | triton {first['triton']} | "
             f"{first['timestamp']} | commit {first.get('commit') or '?'}")
    png = csv_path.with_suffix(".png")
    return png if draw(rows, png, title) else None


def main(argv=None) -> int:
    paths = [Path(p) for p in (argv if argv is not None else sys.argv[1:])]
    if not paths:
        paths = sorted((Path(__file__).parent / "results").glob("*.csv"))
    for path in paths:
        png = plot_csv(path)
        print(f"{path}: {png or 'no chart (no rows, or matplotlib is not importable)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
