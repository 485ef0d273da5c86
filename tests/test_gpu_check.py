"""`make gpu-check` (issue 13) without a GPU: what can be checked on a CPU.

- bench/gpu_check.sh parses, and its dry run lists every stage with a limit, the
  limits summing to at most 8 minutes with the kill grace, and writes nothing;
- bench.gpu_grid's byte model and bandwidth arithmetic, and the grid end to end on
  the CPU (tiny shapes, the C++ ``cpu`` backend as the fused stand-in): the CSV's
  columns and rows, the markdown, the deadline;
- bench.ncu's parser on a sample of ``ncu --csv --page raw`` output with the metric
  names it queries, the attribution of launches to the driver's plan, and the
  orchestrator end to end with a stand-in ``ncu`` (and its time limit).

Not checkable here: CUDA-graph timing, the sync check, do_bench, the copy
bandwidth of a GPU, and real ncu output (the driver needs a GPU).
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import gpu_grid, ncu  # noqa: E402
from bench._grid_report import COLUMNS  # noqa: E402

SCRIPT = ROOT / "bench" / "gpu_check.sh"


# --- the shell script -------------------------------------------------------------

def test_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_dry_run_lists_stages_within_eight_minutes(tmp_path):
    results = tmp_path / "results"
    env = dict(os.environ, GPU_CHECK_DRY="1", RESULTS=str(results), OUT=str(tmp_path / "out"),
               PYTHON=sys.executable)
    out = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    limits = dict(re.findall(r"=== (\w+) \(limit (\d+) s", out))
    assert set(limits) == {"build", "env", "grid", "linear", "ncu"}, out
    assert int(limits["build"]) <= 150 and int(limits["grid"]) <= 150 and int(limits["ncu"]) <= 90
    assert 30 <= int(limits["linear"]) <= 60  # bench.linear_head, issue 15
    tests = re.findall(r'=== tests -k "([^"]+)" \(limit (\d+) s of (\d+) s', out)
    assert [k for k, _, _ in tests][0].startswith("cuda"), out
    test_s = int(tests[0][2])
    assert test_s <= 90
    grace = int(re.search(r"\+ (\d+) s kill grace per stage", out).group(1))
    stages = [int(v) for v in limits.values()] + [test_s]
    assert sum(stages) + grace * len(stages) <= 480, (stages, grace)
    assert "setup.py -q build_ext --inplace" in out and "TORCH_CUDA_ARCH_LIST=9.0" in out
    assert "-m bench.gpu_grid" in out and "-m bench.ncu" in out
    deadline = int(re.search(r"-m bench\.linear_head --out \S+ --deadline-s (\d+)", out).group(1))
    assert deadline < int(limits["linear"])
    assert not results.exists() and not (tmp_path / "out").exists()


def test_make_target_passes_python():
    out = subprocess.run(["make", "-n", "gpu-check", "PYTHON=python3.12"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert "PYTHON=python3.12 bash bench/gpu_check.sh" in out


# --- the grid ----------------------------------------------------------------------

@pytest.mark.parametrize("loss,fp32,bf16", [("focal_bce", 9, 5), ("asl", 9, 5),
                                             ("ghmc", 14, 8), ("dice", 14, 8)])
def test_step_bytes_model(loss, fp32, bf16):
    assert gpu_grid.step_bytes(loss, 1, 4) == fp32
    assert gpu_grid.step_bytes(loss, 1, 2) == bf16
    assert gpu_grid.step_bytes(loss, 262144 * 270, 4) == fp32 * 262144 * 270
    # float32 targets instead of bool: 3 more bytes per read pass
    assert gpu_grid.step_bytes(loss, 1, 4, 4) == fp32 + 3 * gpu_grid.READ_PASSES[loss]


def test_derive_bandwidth_and_speedups():
    rows = [dict(candidate=name, step_bytes=8e9, bench_ms=b, graph_ms=g)
            for name, b, g in (("fused-cuda", 4.0, 2.0), ("eager", 16.0, 10.0),
                               ("compile", 6.0, None), ("anchor", 20.0, None))]
    fused, eager, comp, anchor = gpu_grid.derive(rows, copy_gbs=4000.0)
    assert fused["gb_s"] == pytest.approx(2000.0) and fused["copy_pct"] == pytest.approx(50.0)
    assert fused["graph_gb_s"] == pytest.approx(4000.0)
    assert fused["graph_copy_pct"] == pytest.approx(100.0)
    assert fused["speedup_vs_eager"] == pytest.approx(4.0)
    assert fused["speedup_vs_compile"] == pytest.approx(1.5)
    assert fused["speedup_vs_anchor"] == pytest.approx(5.0)
    assert fused["graph_speedup_vs_eager"] == pytest.approx(5.0)
    assert "graph_speedup_vs_compile" not in fused  # compile had no graph time
    assert eager["speedup_vs_eager"] == pytest.approx(1.0)
    assert "graph_gb_s" not in anchor


def test_copy_bandwidth_cpu():
    import torch
    gbs = gpu_grid.copy_bandwidth(torch.device("cpu"), nbytes=8 << 20, reps=3)
    assert math.isfinite(gbs) and gbs > 0


def _read(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh)), open(path).readline().strip().split(",")


@pytest.fixture
def one_thread():
    """One intra-op thread: on a loaded 2-core machine OpenMP's spinning threads make
    tiny eager steps take ~100x longer (the grid times them, it does not check them)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_grid_cpu_quick_end_to_end(tmp_path, one_thread):
    assert gpu_grid.main(["--device", "cpu", "--quick", "--out", str(tmp_path), "--loss",
                          "focal_bce", "--loss", "ghmc", "--no-compile"]) == 0
    csvs = list(tmp_path.glob("*-grid.csv"))
    assert len(csvs) == 1 and csvs[0].with_suffix(".md").exists()
    rows, header = _read(csvs[0])
    assert tuple(header) == COLUMNS
    cases = {(r["loss"], r["shape"], r["dtype"]) for r in rows}
    assert len(cases) == 2 * len(gpu_grid.QUICK_SHAPES) * 2
    for case in cases:
        names = [r["candidate"] for r in rows if (r["loss"], r["shape"], r["dtype"]) == case]
        assert names == ["fused-cpu", "eager", "compile", "anchor"], names
    for r in rows:
        numel = math.prod(int(v) for v in r["shape"].split("x"))
        size = 4 if r["dtype"] == "float32" else 2
        assert int(r["bytes_per_elem"]) == gpu_grid.step_bytes(r["loss"], 1, size)
        assert r["graph_ms"] == "" and r["host_syncs"] == ""  # no CUDA graphs on a CPU
        if r["candidate"] == "compile":
            assert r["note"] == "skipped: --no-compile" and r["bench_ms"] == ""
            continue
        assert r["note"] == "", r
        ms, gbs = float(r["bench_ms"]), float(r["gb_s"])
        assert ms > 0 and float(r["host_us"]) > 0 and float(r["warmup_s"]) >= 0
        assert gbs == pytest.approx(int(r["bytes_per_elem"]) * numel / (ms * 1e6), rel=2e-3)
        assert float(r["copy_pct"]) == pytest.approx(100 * gbs / float(r["copy_gb_s"]), rel=2e-3)
        if r["candidate"] == "eager":
            assert float(r["speedup_vs_eager"]) == pytest.approx(1.0)
        if r["candidate"] == "fused-cpu":
            assert float(r["speedup_vs_anchor"]) > 0 and r["speedup_vs_compile"] == ""
    md = csvs[0].with_suffix(".md").read_text()
    assert "## Best fused backend per case" in md and "| ghmc | 128x270 | float32 | cpu |" in md
    assert "Not measured" not in md
    # A second run appends to the same CSV.
    assert gpu_grid.main(["--device", "cpu", "--quick", "--out", str(tmp_path), "--loss",
                          "dice", "--no-compile"]) == 0
    assert len(_read(csvs[0])[0]) == len(rows) + 2 * 2 * 4


def test_grid_deadline_skips_cases(tmp_path):
    assert gpu_grid.main(["--device", "cpu", "--quick", "--out", str(tmp_path), "--loss",
                          "asl", "--deadline-s", "0.001"]) == 0
    md = next(tmp_path.glob("*-grid.md")).read_text()
    assert "Not measured (the stage's deadline): asl 128x270 float32" in md
    assert not list(tmp_path.glob("*-grid.csv"))


def test_failing_candidate_is_noted_and_the_grid_goes_on(tmp_path, monkeypatch):
    import torch

    def broken(inputs):
        raise RuntimeError("CUDA error: an illegal memory access\nsecond line")
    real = gpu_grid.candidates

    def with_broken(loss, case):
        cands = real(loss, case)
        cands[0] = type(cands[0])("fused-broken", "cuda", broken)
        return cands
    monkeypatch.setattr(gpu_grid, "candidates", with_broken)
    case = gpu_grid.make_case("focal_bce", (64, 270), torch.float32, "cpu")
    cands = [c for c in with_broken("focal_bce", case) if c.name != "compile"]
    rows = gpu_grid.run_case(case, cands, torch.device("cpu"), 10.0, {})
    assert rows[0]["note"] == "warm-up: RuntimeError: CUDA error: an illegal memory access"
    assert "bench_ms" not in rows[0] and rows[1]["bench_ms"] > 0  # eager still measured


def _cheap_compile(monkeypatch):
    """The compile candidate runs the eager reference: pass 2 without inductor's minutes."""
    real = gpu_grid.candidates

    def cands(loss, case):
        out = real(loss, case)
        eager = next(c for c in out if c.name == "eager")
        return [type(c)(c.name, c.backend, eager.fn) if c.name == "compile" else c for c in out]
    monkeypatch.setattr(gpu_grid, "candidates", cands)


def test_grid_adds_compile_rows_in_a_second_pass(tmp_path, monkeypatch, one_thread):
    _cheap_compile(monkeypatch)
    assert gpu_grid.main(["--device", "cpu", "--quick", "--out", str(tmp_path), "--loss",
                          "dice", "--deadline-s", "60"]) == 0
    rows, _ = _read(next(tmp_path.glob("*-grid.csv")))
    assert [r["candidate"] for r in rows[:4]] == ["fused-cpu", "eager", "compile", "anchor"]
    for r in rows:
        assert r["note"] == "" and float(r["bench_ms"]) > 0, r
        assert float(r["speedup_vs_compile"]) > 0  # every row has a compile time to compare
    assert not list(tmp_path.glob("*.partial.csv"))


def test_grid_drops_compile_rows_first_at_the_deadline(tmp_path, monkeypatch, one_thread):
    _cheap_compile(monkeypatch)
    monkeypatch.setattr(gpu_grid.Deadline, "compile_estimate", lambda self: 1e6)
    assert gpu_grid.main(["--device", "cpu", "--quick", "--out", str(tmp_path), "--loss",
                          "dice", "--deadline-s", "60"]) == 0
    rows, _ = _read(next(tmp_path.glob("*-grid.csv")))
    assert len(rows) == 2 * 2 * 4  # every case measured
    for r in rows:
        if r["candidate"] == "compile":
            assert r["note"].startswith("skipped: torch.compile") and r["bench_ms"] == ""
        else:
            assert float(r["bench_ms"]) > 0 and r["speedup_vs_compile"] == ""


# --- ncu ----------------------------------------------------------------------------

# What `ncu --csv --page raw --print-units base --metrics <bench.ncu.METRICS>` prints:
# its own ==PROF== lines among the program's output, a header of the launch columns and
# the metric names, a units row, then one row per profiled launch (thousands separated).
RAW = '''==PROF== Connected to process 4242 (/usr/bin/python3.12)
==PROF== Profiling "_focal_bce_kernel": 0%....50%....100% - 9 passes
==PROF== Profiling "scale_grad_kernel": 0%....50%....100% - 9 passes
"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","dram__bytes_read.sum","dram__bytes_write.sum","dram__throughput.avg.pct_of_peak_sustained_elapsed","gpu__time_duration.sum","launch__block_size","launch__grid_size","launch__registers_per_thread","sm__inst_issued.avg.pct_of_peak_sustained_active","sm__throughput.avg.pct_of_peak_sustained_elapsed","sm__warps_active.avg.pct_of_peak_sustained_active","smsp__inst_executed.sum","smsp__issue_active.avg.pct_of_peak_sustained_active","smsp__thread_inst_executed.sum"
"","","","","","","","","","","","byte","byte","%","nsecond","","","register/thread","%","%","%","inst","%","inst"
"0","4242","python3.12","127.0.0.1","_focal_bce_kernel","1","7","(128, 1, 1)","(4320, 1, 1)","0","9.0","354,418,432","283,312,128","78.12","181,344","128","4320","32","71.5","80.2","88.1","221,184,000","71.4","7,077,888,000"
"1","4242","python3.12","127.0.0.1","void fused_losses::(anonymous namespace)::_elementwise_fwd_kernel<fused_losses::FocalBce, float, bool>(fused_losses::LaunchArgs<fused_losses::FocalBceOptions>)","1","7","(256, 1, 1)","(1056, 1, 1)","0","9.0","354,500,000","283,300,000","90.5","160,000","256","1056","40","60.0","65.0","70.0","150,000,000","59.9","4,800,000,000"
"2","4242","python3.12","127.0.0.1","void fused_losses::(anonymous namespace)::scale_grad_kernel<float>(float *, const float *, long, bool)","1","7","(256, 1, 1)","(1056, 1, 1)","0","9.0","283,115,520","283,115,520","91.0","140,000","256","1056","24","20.0","30.0","80.0","9,000,000","19.0","288,000,000"
==PROF== Disconnected from process 4242
'''
NUMEL = 262144 * 270


def _plan(entries):
    return {"device": "NVIDIA H200", "shape": [262144, 270], "numel": NUMEL, "calls": 1,
            "entries": entries, "problems": []}


FWD_T = dict(label="focal_bce fwd triton float32", kind="fwd", loss="focal_bce",
             backend="triton", dtype="float32", numel=NUMEL, model_b_per_elem=9,
             expect="_focal_bce")
FWD_C = dict(FWD_T, label="focal_bce fwd cuda float32", backend="cuda", expect="_elementwise_fwd")
SCALE = dict(label="scale_grad x2 cuda float32", kind="scale", loss="", backend="cuda",
             dtype="float32", numel=NUMEL, model_b_per_elem=8)


def test_raw_sample_queries_exactly_the_metrics():
    header = next(line for line in RAW.splitlines() if line.startswith('"ID"'))
    names = {n for n in next(csv.reader([header])) if "__" in n}
    assert names == set(ncu.METRICS)
    assert set(ncu.CORE_METRICS) <= set(ncu.METRICS)


def test_parse_raw_page():
    launches = ncu.parse_raw(RAW)
    assert [la["id"] for la in launches] == [0, 1, 2]
    m = launches[0]["metrics"]
    assert m["dram__bytes_read.sum"] == 354418432 and m["gpu__time_duration.sum"] == 181344
    assert m["smsp__thread_inst_executed.sum"] == 7077888000
    assert launches[2]["kernel"].startswith("void fused_losses::")
    assert [ncu.kind_of(la["kernel"]) for la in launches] == ["fwd", "fwd", "scale"]


def test_units_to_base():
    assert ncu.to_base("181.34", "usecond") == pytest.approx(181340)
    assert ncu.to_base("0.18134", "msecond") == pytest.approx(181340)
    assert ncu.to_base("354.42", "Mbyte") == pytest.approx(354.42e6)
    assert ncu.to_base("1,024", "byte") == 1024
    assert ncu.to_base("n/a", "byte") is None and ncu.to_base("", "") is None
    assert ncu.to_base("78.5", "%") == 78.5


def test_parse_details_page():
    head = ('"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream",'
            '"Block Size","Grid Size","Device","CC","Section Name","Metric Name",'
            '"Metric Unit","Metric Value"')
    lead = '"3","1","python3","h","_asl_kernel","1","7","(128, 1, 1)","(4320, 1, 1)","0","9.0",'
    text = "\n".join([head, lead + '"","gpu__time_duration.sum","usecond","200.5"',
                      lead + '"","dram__bytes_read.sum","Mbyte","354.4"'])
    (launch,) = ncu.parse_raw(text)
    assert launch["id"] == 3 and launch["kernel"] == "_asl_kernel"
    assert launch["metrics"]["gpu__time_duration.sum"] == pytest.approx(200500)
    assert launch["metrics"]["dram__bytes_read.sum"] == pytest.approx(354.4e6)


def test_attribute_derives_per_element_numbers():
    rows = ncu.attribute(ncu.parse_raw(RAW), _plan([FWD_T, FWD_C, SCALE]))
    tri, cud, scale = rows
    assert tri["label"] == FWD_T["label"] and tri["note"] == ""
    assert tri["duration_us"] == pytest.approx(181.344)
    assert tri["dram_b_per_elem"] == pytest.approx((354418432 + 283312128) / NUMEL)
    assert tri["dram_gb_s"] == pytest.approx((354418432 + 283312128) / 181344)
    assert tri["inst_per_elem"] == pytest.approx(221184000 * 32 / NUMEL)
    assert tri["thread_inst_per_elem"] == pytest.approx(7077888000 / NUMEL)
    assert tri["issue_busy_pct"] == 71.5 and tri["issue_active_pct"] == 71.4
    assert tri["registers"] == 32 and tri["grid"] == 4320
    assert cud["label"] == FWD_C["label"] and cud["note"] == ""
    assert cud["kernel"].endswith("_elementwise_fwd_kernel<fused_losses::FocalBce, float, bool>")
    assert scale["label"] == SCALE["label"] and scale["dram_b_per_elem"] == pytest.approx(8.0, 1e-3)


def test_attribute_flags_wrong_names_missing_and_unplanned_launches():
    swapped = ncu.attribute(ncu.parse_raw(RAW), _plan([FWD_C, FWD_T]))
    assert "expected a kernel named like '_elementwise_fwd'" in swapped[0]["note"]
    assert swapped[2]["label"] == "unplanned"  # the scale launch had no plan entry
    missing = ncu.attribute(ncu.parse_raw(RAW), _plan([FWD_T, FWD_C, SCALE, SCALE]))
    assert missing[-1]["note"].startswith("not profiled")
    summary = {s["label"]: s for s in ncu.summary(missing)}
    assert summary[SCALE["label"]]["launches"] == 1
    assert summary[SCALE["label"]]["note"].startswith("not profiled")


def test_summary_averages_launches():
    raw = RAW.replace('"2","4242","python3.12","127.0.0.1","void fused_losses::(anonymous '
                      'namespace)::scale_grad_kernel', '"2","4242","python3.12","127.0.0.1",'
                      '"_focal_bce_kernel')
    rows = ncu.attribute(ncu.parse_raw(raw), _plan([FWD_T, FWD_C, FWD_T]))
    (tri,) = [s for s in ncu.summary(rows) if s["label"] == FWD_T["label"]]
    assert tri["launches"] == 2
    assert tri["duration_us"] == pytest.approx((181.344 + 140.0) / 2)


def _fake_ncu(tmp_path, body: str) -> str:
    path = tmp_path / "ncu"
    path.write_text(f"#!{sys.executable}\nimport json, sys, time\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_orchestrator_end_to_end_with_a_stand_in_ncu(tmp_path, monkeypatch):
    plan = _plan([FWD_T, FWD_C, SCALE])
    fake = _fake_ncu(tmp_path, (
        "args = sys.argv[1:]\n"
        "assert args[args.index('--clock-control') + 1] == 'none'\n"
        "assert args[args.index('--page') + 1] == 'raw' and '--csv' in args\n"
        f"open(args[args.index('--drive') + 1], 'w').write(json.dumps({plan!r}))\n"
        f"sys.stdout.write({RAW!r})\n"))
    monkeypatch.setattr(ncu, "find_ncu", lambda: fake)
    out = tmp_path / "results"
    assert ncu.main(["--out", str(out), "--timeout", "60"]) == 0
    rows, header = _read(out / "nvidia-h200-ncu.csv")
    assert tuple(header) == ncu.COLUMNS and len(rows) == 3
    assert rows[0]["label"] == FWD_T["label"] and float(rows[0]["inst_per_elem"]) > 0
    md = (out / "nvidia-h200-ncu.md").read_text()
    assert "| focal_bce fwd cuda float32 | 1 |" in md and "ncu rc 0 with 13 metrics" in md
    for name in ("nvidia-h200-ncu-raw.csv", "nvidia-h200-ncu.log", "nvidia-h200-ncu-plan.json"):
        assert (out / name).exists()
    # The kept output parses again.
    again = tmp_path / "again"
    assert ncu.main(["--parse", str(out / "nvidia-h200-ncu-raw.csv"),
                     str(out / "nvidia-h200-ncu-plan.json"), "--out", str(again)]) == 0
    assert len(_read(again / "nvidia-h200-ncu.csv")[0]) == 3


def test_orchestrator_retries_with_core_metrics_then_stops(tmp_path, monkeypatch):
    fake = _fake_ncu(tmp_path, "print('==ERROR== Failed to find metric foo__bar', "
                               "file=sys.stderr)\nsys.exit(1)")
    monkeypatch.setattr(ncu, "find_ncu", lambda: fake)
    assert ncu.main(["--out", str(tmp_path), "--timeout", "60"]) == 0
    md = (tmp_path / "unknown-gpu-ncu.md").read_text()
    assert "ncu rc 1 with 13 metrics: 0 launches" in md
    assert "ncu rc 1 with 5 metrics: 0 launches" in md
    assert "==ERROR== Failed to find metric" in md


def test_ncu_time_limit_kills_it(tmp_path):
    fake = _fake_ncu(tmp_path, "time.sleep(60)")
    start = time.monotonic()
    rc = ncu.run_ncu(fake, ncu.METRICS, tmp_path / "plan.json", tmp_path / "raw.csv",
                     tmp_path / "log", ["float32"], timeout=1)
    assert rc == 124 and time.monotonic() - start < 10
    assert "ncu stopped after 1 s" in (tmp_path / "log").read_text()


def test_driver_plan_on_the_cpu(tmp_path):
    """The driver's windows on the C++ CPU kernels (unprofiled): every window runs and
    the plan lists each launch, forwards before scales, in launch order."""
    plan_path = tmp_path / "plan.json"
    assert ncu.drive(plan_path, ["float32"], "cpu", (64, 270)) == 0
    plan = json.loads(plan_path.read_text())
    assert plan["problems"] == [] and plan["numel"] == 64 * 270
    labels = [e["label"] for e in plan["entries"]]
    assert labels == [lab for lab in ("focal_bce fwd cpu float32", "asl fwd cpu float32",
                                      "scale_grad x2 cpu float32", "scale_grad x1 cpu float32")
                      for _ in range(plan["calls"])]
    assert [e["model_b_per_elem"] for e in plan["entries"][::plan["calls"]]] == [9, 9, 8, 0]
