"""The row losses of ``bench.gpu_grid`` (issue 14) on a CPU.

- ``bench._grid_rows.row_step_bytes``: logits read once + gradient written once in
  the logits' dtype + 8 B of int64 target per row;
- the issue-14 verdicts (``annotate``): softmax focal's speed-up over the
  F.cross_entropy anchor against 2x / 1.5x / 1x by class count, DSC's time over
  softmax focal's against 1.2x, graph times preferred to do_bench times;
- the candidates (fused per backend, auto, compile, the anchor) and the compile
  plan (none above C=32000);
- ``--device cpu --quick`` end to end with row-loss cases (tiny shapes, fp32 only,
  to keep it to a few seconds): CSV columns, bytes, the target column, the
  markdown's issue-14 table, row cases ordered before elementwise ones.
"""
from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import _grid_rows, gpu_grid  # noqa: E402
from bench._grid_report import COLUMNS  # noqa: E402


@pytest.mark.parametrize("shape,size,per_elem", [((65536, 270), 4, 8), ((65536, 270), 2, 4),
                                                  ((8192, 32000), 4, 8), ((4096, 128000), 2, 4)])
def test_row_step_bytes(shape, size, per_elem):
    n, c = shape
    assert _grid_rows.row_step_bytes(shape, size) == per_elem * n * c + 8 * n
    assert _grid_rows.row_step_bytes(shape, size, target_bytes=4) == per_elem * n * c + 4 * n
    case = gpu_grid.make_case("softmax_focal", shape, torch.float32, "cpu")  # lazy inputs
    row = gpu_grid.blank_row(case, gpu_grid._grid_rows.Candidate("anchor", "x", None), {}, 1.0)
    assert row["step_bytes"] == 8 * n * c + 8 * n and row["bytes_per_elem"] == 8


def _row(loss, cand, bench, graph=None, shape="65536x270", dtype="float32"):
    return dict(loss=loss, shape=shape, dtype=dtype, candidate=cand, backend="b",
                bench_ms=bench, graph_ms=graph)


def test_targets_and_ratio():
    rows = [_row("softmax_focal", "fused-triton", 1.0, 0.5),     # graph: 2.0/0.5 = 4x
            _row("softmax_focal", "fused", 1.0),                  # do_bench: 1.5x < 2x
            _row("softmax_focal", "anchor", 1.5, 2.0),
            _row("dsc", "fused-triton", 2.0, 0.55),               # 0.55/0.5 = 1.1x
            _row("dsc", "fused", 1.3),                            # 1.3/1.0 = 1.3x
            _row("dsc", "anchor", 9.0),
            _row("softmax_focal", "fused", 2.0, shape="4096x128000"),
            _row("softmax_focal", "anchor", 2.0, shape="4096x128000"),   # 1x: met
            _row("dsc", "fused", 1.0, shape="4096x128000", dtype="bfloat16"),  # no focal
            _row("focal_bce", "fused-cuda", 1.0)]
    _grid_rows.annotate(rows)
    _grid_rows.annotate(rows)  # idempotent (the markdown annotates again)
    ft, fa, anchor, dt, da, dsc_anchor, wide, wide_anchor, lone, bce = rows
    assert ft["target"] == "4.00x vs cross_entropy (graph), needs >= 2x: met"
    assert fa["target"] == "1.50x vs cross_entropy (do_bench), needs >= 2x: MISSED"
    assert dt["dsc_vs_focal"] == pytest.approx(1.1)
    assert dt["target"] == "1.10x softmax focal's time (graph), needs <= 1.2x: met"
    assert da["dsc_vs_focal"] == pytest.approx(1.3) and da["target"].endswith("MISSED")
    assert wide["target"] == "1.00x vs cross_entropy (do_bench), needs >= 1x: met"
    for r in (anchor, dsc_anchor, wide_anchor, lone, bce):
        assert "target" not in r and "dsc_vs_focal" not in r
    summary = {(s["shape"], s["dtype"]): s for s in _grid_rows.summary_rows(rows)}
    assert summary[("65536x270", "float32")]["softmax_focal_target"] == fa["target"]
    assert summary[("65536x270", "float32")]["dsc_target"] == da["target"]
    assert summary[("4096x128000", "bfloat16")]["dsc_target"] == "not measured"


def test_candidates_and_compile_plan():
    case = gpu_grid.make_case("dsc", (16, 32000), torch.float32, "cpu")
    names = [(c.name, c.backend) for c in gpu_grid.candidates("dsc", case)]
    assert names == [("fused-cpu", "cpu"), ("fused", "cpu"), ("compile", "inductor"),
                     ("anchor", "cross_entropy")]
    assert _grid_rows.compile_skip(case) == ""
    wide = gpu_grid.make_case("softmax_focal", (4096, 128000), torch.bfloat16, "cpu")
    assert "not planned above C=32000" in _grid_rows.compile_skip(wide)
    assert _grid_rows.compile_skip(gpu_grid.make_case("asl", (8, 200000), torch.float32,
                                                      "cpu")) == ""
    # What auto picks on a GPU: CUDA up to ROW_CUDA_MAX_CLASSES classes, Triton above
    # (where this installation has both; resolve_backend says so on a CPU too).
    from fused_losses._backend import ROW_CUDA_MAX_CLASSES, wide_rows
    assert not wide_rows("softmax_focal", (65536, 270)) and ROW_CUDA_MAX_CLASSES < 32000
    assert wide_rows("dsc", (8192, 32000))


def test_inputs_are_class_indices():
    inputs = gpu_grid.make_case("softmax_focal", (64, 270), torch.bfloat16, "cpu").make_inputs()
    assert inputs["input"].dtype == torch.bfloat16 and inputs["input"].requires_grad
    assert inputs["target"].dtype == torch.int64 and inputs["target"].shape == (64,)


def test_grid_cpu_quick_with_row_losses(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_grid, "QUICK_ROW_SHAPES", ((128, 270), (4, 128000)))
    monkeypatch.setattr(gpu_grid, "QUICK_SHAPES", ((64, 270),))
    monkeypatch.setattr(gpu_grid, "DTYPES", (torch.float32,))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert gpu_grid.main(["--device", "cpu", "--quick", "--out", str(tmp_path),
                              "--loss", "focal_bce", "--loss", "softmax_focal",
                              "--loss", "dsc", "--no-compile"]) == 0
    finally:
        torch.set_num_threads(threads)
    path = next(tmp_path.glob("*-grid.csv"))
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(open(path).readline().strip().split(",")) == COLUMNS
    order = list(dict.fromkeys((r["loss"], r["shape"]) for r in rows))
    assert order == [("softmax_focal", "128x270"), ("dsc", "128x270"),
                     ("softmax_focal", "4x128000"), ("dsc", "4x128000"),
                     ("focal_bce", "64x270")]  # issue 14's rows first
    for r in rows:
        if r["loss"] not in _grid_rows.ROW_LOSSES:
            assert r["target"] == "" and r["dsc_vs_focal"] == ""
            continue
        n, c = (int(v) for v in r["shape"].split("x"))
        assert float(r["step_mb"]) * 1e6 == pytest.approx(8 * n * c + 8 * n, rel=1e-3)
        assert r["bytes_per_elem"] == "8"
        if r["candidate"] == "compile":
            assert r["note"] == "skipped: --no-compile"
            continue
        assert r["note"] == "", r
        gbs = float(r["gb_s"])
        assert gbs == pytest.approx((8 * n * c + 8 * n) / (float(r["bench_ms"]) * 1e6),
                                    rel=2e-3)
        assert float(r["copy_pct"]) == pytest.approx(100 * gbs / float(r["copy_gb_s"]),
                                                     rel=2e-3)
        if r["candidate"] == "anchor":
            assert r["backend"] == "cross_entropy" and r["target"] == ""
            continue
        assert r["candidate"] in ("fused-cpu", "fused") and r["backend"] == "cpu"
        assert float(r["speedup_vs_anchor"]) > 0 and r["speedup_vs_eager"] == ""
        if r["loss"] == "softmax_focal":
            need = "2x" if r["shape"] == "128x270" else "1x"
            assert f"needs >= {need}: " in r["target"] and r["dsc_vs_focal"] == ""
            sp = float(r["speedup_vs_anchor"])
            assert r["target"].startswith(f"{sp:.2f}x vs cross_entropy (do_bench)")
        else:
            focal = next(f for f in rows if f["loss"] == "softmax_focal" and
                         f["shape"] == r["shape"] and f["candidate"] == r["candidate"])
            ratio = float(r["dsc_vs_focal"])
            assert ratio == pytest.approx(float(r["bench_ms"]) / float(focal["bench_ms"]),
                                          rel=2e-3)
            assert r["target"].endswith("met" if ratio <= 1.2 else "MISSED")
    names = [r["candidate"] for r in rows if r["loss"] == "dsc" and r["shape"] == "128x270"]
    assert names == ["fused-cpu", "fused", "compile", "anchor"]
    md = path.with_suffix(".md").read_text()
    assert "## Issue 14: row losses vs F.cross_entropy" in md
    assert md.index("## Issue 14") < md.index("## Best fused backend")
    assert "| 4x128000 | float32 | cpu |" in md and "needs <= 1.2x" in md
    assert math.isfinite(float(rows[0]["copy_gb_s"]))


def test_grid_compile_pass_skips_wide_row_cases(tmp_path, monkeypatch):
    """Without --no-compile the (4, 128000) compile rows are written as not planned
    (pass 2 never starts inductor for them)."""
    monkeypatch.setattr(gpu_grid, "QUICK_ROW_SHAPES", ((4, 128000),))
    monkeypatch.setattr(gpu_grid, "DTYPES", (torch.float32,))
    assert gpu_grid.main(["--device", "cpu", "--quick", "--out", str(tmp_path),
                          "--loss", "dsc"]) == 0
    with next(tmp_path.glob("*-grid.csv")).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    comp = [r for r in rows if r["candidate"] == "compile"]
    assert len(comp) == 1 and comp[0]["bench_ms"] == ""
    assert comp[0]["note"].startswith("skipped: not planned above C=32000")
    assert "target" in rows[0] and rows[0]["target"] == ""  # no softmax focal to compare
