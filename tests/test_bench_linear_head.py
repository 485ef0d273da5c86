"""bench/linear_head.py (issue 15's benchmark) on the CPU, on tiny shapes.

The quick bench runs in-process: its table, CSV columns and markdown, and that
every ratio in a row is the baseline's measured ms (or MiB) over the row's from
the same run. The module must not be taken for a ``bench_<loss>.py`` module.
"""
from __future__ import annotations

import csv
import dataclasses
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import _linear_head_report as report  # noqa: E402
from bench import linear_head, run  # noqa: E402


@pytest.fixture
def one_thread():
    import torch
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)  # --quick sets 1 thread on a CPU


def _read(path):
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader), tuple(reader.fieldnames)


def test_not_discovered_as_a_loss_bench():
    losses = run.available_losses()
    assert "focal_bce" in losses
    assert not any("linear" in name for name in losses), losses


def test_quick_bench_in_process(tmp_path, monkeypatch, capsys, one_thread):
    real = linear_head.cases

    def tiny(device, quick):
        assert quick
        return [dataclasses.replace(c, n=64, h=16, c=1024) for c in real(device, quick)]
    monkeypatch.setattr(linear_head, "cases", tiny)
    assert linear_head.main(["--quick", "--reps", "2", "--device", "cpu",
                             "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "| loss | N×H×C | dtype | candidate |" in printed and "targets (--quick" in printed
    (csv_path,) = tmp_path.glob("linear-head-*.csv")
    assert csv_path.name == f"linear-head-{run.slug(run.device_name(linear_head.torch.device('cpu')))}.csv"
    rows, header = _read(csv_path)
    assert header == report.COLUMNS
    names = {(r["loss"], r["candidate"]) for r in rows}
    assert names == {("focal_bce", n) for n in ("fused", "unfused", "fused-csr", "eager",
                                                "linear_cross_entropy", "compile")} | {
        ("asl", "fused"), ("asl", "unfused")}
    assert {r["cpu_capability"] for r in rows} == {
        linear_head.torch.ops.fused_losses._cpu_capability()}
    for case in ("focal_bce", "asl"):
        get = {r["candidate"]: r for r in rows if r["loss"] == case}
        assert get["fused"]["target_form"] == "padded" and get["fused"]["shape"] == "64x16x1024"
        grads_mib = (64 * 16 + 1024 * 16 + 1024) * 4 / 2**20
        logits_mib = 64 * 1024 * 4 / 2**20
        for r in get.values():
            if r["candidate"] == "compile":
                assert r["ms"] == "" and r["note"].startswith("skipped: --quick"), r
                continue
            assert r["note"] == "", r
            ms, peak = float(r["ms"]), float(r["peak_extra_mib"])
            assert ms > 0 and peak > 0
            assert float(r["grads_mib"]) == pytest.approx(grads_mib, abs=1e-3)
            assert float(r["peak_x_grads"]) == pytest.approx(peak / grads_mib, rel=0.05, abs=0.01)
            assert float(r["peak_pct_logits"]) == pytest.approx(100 * peak / logits_mib,
                                                                rel=0.05, abs=0.1)
            for base, short in report.SHORT.items():
                col = f"speedup_vs_{short}"
                if base not in get or not get[base]["ms"]:
                    assert r[col] == "" and r[f"mem_ratio_vs_{short}"] == ""
                    continue
                assert float(r[col]) == pytest.approx(float(get[base]["ms"]) / ms,
                                                      rel=2e-3, abs=2e-3), (r, col)
                assert float(r[f"mem_ratio_vs_{short}"]) == pytest.approx(
                    float(get[base]["peak_extra_mib"]) / peak, rel=0.05, abs=0.01)
        assert float(get["unfused"]["speedup_vs_unfused"]) == 1.0
        assert get["fused"]["gemm_ms"] == ""  # the GEMMs alone are timed on CUDA only
    md = csv_path.with_suffix(".md").read_text()
    assert "| loss | N×H×C |" in md and "## Targets" in md and "peak <= grads + 10%" in md
    assert md.count("| focal_bce | 64x16x1024 | float32 |") == 6
    # Later runs append to the CSV (a file with other columns is rewritten with these first).
    report.append_csv(csv_path, rows[:2])
    assert len(_read(csv_path)[0]) == len(rows) + 2
    old = tmp_path / "old.csv"
    old.write_text("commit,ms\nabc,1.5\n")
    report.append_csv(old, rows[:1])
    (first, second), header = _read(old)
    assert header == report.COLUMNS and first["commit"] == "abc" and first["ms"] == "1.5"
    assert second == {k: rows[0].get(k, "") for k in report.COLUMNS}


def _case(**kw):
    return linear_head.Case("focal_bce", kw.pop("n", 4), 2, kw.pop("c", 8), linear_head.torch.float32,
                            linear_head.torch.device("cpu"), 1, 2, **kw)


def test_ratios_and_targets_from_given_numbers():
    cand = [SimpleNamespace(name=n, backend="b", target_form="t")
            for n in ("fused", "unfused", "eager", "compile")]
    mib = 1 << 20
    rows = report.case_rows(_case(n=1024, c=256), cand,
                            {"fused": (10.0, 1.0), "unfused": (13.0, 1.0), "eager": (60.0, 2.0)},
                            {"fused": 2 * mib, "unfused": 40 * mib, "eager": 100 * mib},
                            {"compile": "skipped: x"}, grads_bytes=mib, gemm_ms=4.0,
                            common={"commit": "abc"})
    fused, unfused, eager, comp = rows
    assert fused["speedup_vs_unfused"] == "1.300" and fused["speedup_vs_eager"] == "6.000"
    assert fused["mem_ratio_vs_unfused"] == "20.00" and fused["mem_ratio_vs_eager"] == "50.00"
    assert fused["peak_x_grads"] == "2.00" and fused["peak_pct_logits"] == "200.0" and fused["peak_extra_mib"] == "2.000"
    assert fused["fused_over_gemm"] == "2.500" and "fused_over_gemm" not in unfused
    assert "speedup_vs_compile" not in fused and comp["note"] == "skipped: x"
    assert eager["speedup_vs_eager"] == "1.000" and "ms" not in comp
    gpu = {check: met for _, check, met, _ in report.targets(rows, "cuda")}
    assert gpu == {">= 1.3x unfused speed": True, ">= 5x eager speed": True,
                   ">= 10x less peak than unfused": True}
    cpu = {check: met for _, check, met, _ in report.targets(rows, "cpu")}
    # peak 2 MiB vs grads 1 MiB + 10 % of the 1 MiB logits
    assert cpu == {"time <= unfused": True, "peak <= grads + 10% of N*C*4 B": False}
