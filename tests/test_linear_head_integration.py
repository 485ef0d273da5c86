"""The fused linear heads with the rest of PyTorch: torch.compile, opcheck of the
registered op, CPU autocast, DDP on two gloo ranks, and (on a GPU) CUDA graphs
and parity of the ``cuda`` and ``triton`` backends on CUDA tensors.
"""
import datetime
import os

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import fused_losses as fl
from fused_losses import _linear_chunks, linear_head as LH
from fused_losses._linear_targets import normalize
from helpers import assert_close, run_ranks
from test_linear_head import close, loss_fns, make_problem, one_thread, reference  # noqa: F401

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta",
                                        "ignore:Sparse invariant checks are implicitly")
CPU_FUSED = "cpu" in fl.available_backends("cpu")
needs_cpu = pytest.mark.skipif(not CPU_FUSED, reason="C++ extension not built")


def _params(n=16, h=8, c=300, form="padded64", seed=0, dtype=torch.float32):
    x, w, b, target, dense = make_problem(n, h, c, form, seed=seed)
    return [t.to(dtype).requires_grad_() for t in (x, w, b)], target, dense


def _step(fn, params, target, upstream=1.7):
    for p in params:
        p.grad = None
    loss = fn(*params, target)
    (loss * upstream).backward()
    return [loss.detach()] + [p.grad.clone() for p in params]


def _head(x, w, b, t):
    return fl.linear_focal_bce(x, w, t, linear_bias=b, alpha=0.25, pos_weight=_PW,
                               chunk_size=128, backend="cpu")


_PW = torch.linspace(0.5, 2.0, 300)


@needs_cpu
@pytest.mark.parametrize("form", ["dense_bool", "padded64"])
def test_compile_fullgraph_matches_eager(form):
    """One graph (the op has a fake kernel), the backward through AOTAutograd."""
    params, target, _ = _params(form=form)
    eager = _step(_head, params, target)
    compiled = _step(torch.compile(_head, fullgraph=True), params, target)
    for a, e, what in zip(compiled, eager, ("loss", "grad input", "grad weight", "grad bias")):
        assert_close(a, e, what=what)


@needs_cpu
def test_compile_with_graph_break_takes_a_csr_target():
    """Dynamo cannot wrap sparse tensors (fullgraph=True refuses a CSR target);
    without fullgraph it breaks the graph and the result is eager's."""
    params, target, _ = _params(form="csr_soft")
    eager = _step(_head, params, target)
    compiled = _step(torch.compile(_head, backend="aot_eager"), params, target)
    for a, e, what in zip(compiled, eager, ("loss", "grad input", "grad weight", "grad bias")):
        assert_close(a, e, what=what)


def _op_args(form, by_rows, needs, loss="focal"):
    """Arguments of ``fused_losses::linear_head`` built as ``linear_head._call`` does."""
    n, c = (40, 23) if by_rows else (13, 301)
    (x, w, b), target, _ = _params(n, 8, c, form)
    head = LH.FOCAL if loss == "focal" else LH.ASL
    _, _, opts = loss_fns(loss, c)
    opts.pop("reduction", None)
    values = LH.check_options(head, opts)
    spec = head.spec
    operands = [values[k] if isinstance(values[k], torch.Tensor) else None
                for k in spec.kernel_operands]
    targets = normalize(target, n, c, x.device)
    return (x, w, b, *targets, operands, spec.stem, "cpu", spec.encode(values), by_rows,
            16 if by_rows else 128, 1.0 / (n * c), *needs)


@needs_cpu
@pytest.mark.parametrize("form,by_rows,loss", [("padded64", False, "focal"),
                                               ("csr_soft", True, "asl"),
                                               ("dense_bool", False, "asl")])
def test_opcheck(form, by_rows, loss):
    torch.library.opcheck(torch.ops.fused_losses.linear_head.default,
                          _op_args(form, by_rows, (True, True, True), loss))


@needs_cpu
def test_opcheck_without_weight_and_bias_grads():
    # The gradients not computed are distinct empty outputs (a custom op's may not alias).
    torch.library.opcheck(torch.ops.fused_losses.linear_head.default,
                          _op_args("padded64", False, (True, False, False)))


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_cpu_autocast_bf16(backend):
    """Under autocast the head sees what F.linear would: bf16 input, weight and bias;
    the gradients reach the fp32 tensors as fp32."""
    if backend not in fl.available_backends("cpu"):
        pytest.skip(f"{backend} unavailable")
    params, target, dense = _params(37, 16, 301, "csr_bool", seed=2)
    fn, _, opts = loss_fns("focal", 301)

    def head(x, w, b, t):
        return fn(x, w, t, linear_bias=b, **opts, chunk_size=128, backend=backend)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = _step(head, params, target)
    assert got[0].dtype == torch.bfloat16
    assert all(g.dtype == torch.float32 for g in got[1:])
    bf = [p.detach().bfloat16().requires_grad_() for p in params]
    want = _step(head, bf, target)
    for a, e, what in zip(got, want, ("loss", "grad input", "grad weight", "grad bias")):
        assert torch.equal(a, e.to(a.dtype)), what
    # and the bf16 maths is right: float64 composition of the rounded values
    close(got[0], reference(fl.focal_bce, *bf, dense, opts)[0], 2e-2, "loss vs float64")


# --- DDP: two gloo ranks, each on half of the batch -------------------------------
WORLD, STEPS, DDP_C = 2, 3, 500


def ddp_data():
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(64, 16, generator=gen)
    idx = torch.randint(0, DDP_C, (64, 6), generator=gen)
    idx[torch.rand(64, 6, generator=gen) < 0.3] = -1
    return h, idx


def ddp_model():
    torch.manual_seed(1)
    return torch.nn.ModuleDict({
        "enc": torch.nn.Linear(16, 24),
        "head": fl.LinearFocalBCE(24, DDP_C, alpha=0.25,
                                  pos_weight=torch.linspace(1, 3, DDP_C), chunk_size=96),
    })


class _Net(torch.nn.Module):
    """encoder -> ReLU -> fused head; forward(h, target) is the loss."""

    def __init__(self):
        super().__init__()
        self.layers = ddp_model()

    def forward(self, h, target):
        return self.layers["head"](torch.relu(self.layers["enc"](h)), target)


def ddp_train(model, h, target):
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        model(h, target).backward()
        opt.step()


def _rank(rank, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    try:
        h, idx = ddp_data()
        rows = slice(rank * len(h) // WORLD, (rank + 1) * len(h) // WORLD)
        model = DistributedDataParallel(_Net())
        ddp_train(model, h[rows], idx[rows])
        torch.save(model.module.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_ddp_matches_one_process(tmp_path):
    assert _linear_chunks.plan(32, DDP_C, torch.float32, "cpu", 1, 96).count >= 5
    run_ranks(_rank, lambda attempt: (str(tmp_path / f"init{attempt}"), str(tmp_path)), WORLD)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    single = _Net()
    ddp_train(single, *ddp_data())
    start = _Net().state_dict()
    assert set(ranks[0]) == set(start)
    for key, value in single.state_dict().items():
        if key.endswith("pos_weight"):
            continue
        assert not torch.equal(value, start[key]), key  # training moved it
        for r in ranks:
            assert torch.equal(r[key], ranks[0][key]), f"{key} differs between ranks"
        close(ranks[0][key], value, 2e-5, key)


# --- CUDA ---------------------------------------------------------------------------
@pytest.mark.cuda
def test_cuda_graph_capture_and_replay_with_new_inputs():
    dev = "cuda"
    n, h, c = 64, 32, 5000
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, h, generator=gen).to(dev, torch.bfloat16).requires_grad_()
    w = (torch.randn(c, h, generator=gen) / 4).to(dev, torch.bfloat16).requires_grad_()
    b = torch.zeros(c).to(dev, torch.bfloat16).requires_grad_()
    idx = torch.randint(0, c, (n, 8), generator=gen).to(dev)

    def step():
        loss = fl.linear_focal_bce(x, w, idx, linear_bias=b, alpha=0.25, chunk_size=1024)
        (loss * 1.7).backward()
        return loss

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # kernels compiled / autotuned outside the capture
        for _ in range(2):
            x.grad = w.grad = b.grad = None
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    x.grad = w.grad = b.grad = None
    with torch.cuda.graph(graph):
        loss = step()
    for seed in (1, 2):
        new = torch.randn(n, h, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            x.copy_(new.to(dev, torch.bfloat16))
        graph.replay()
        torch.cuda.synchronize()
        got = [t.clone() for t in (loss, x.grad, w.grad, b.grad)]
        xe, we, be = (t.detach().clone().requires_grad_() for t in (x, w, b))
        le = fl.linear_focal_bce(xe, we, idx, linear_bias=be, alpha=0.25, chunk_size=1024)
        (le * 1.7).backward()
        for a, e, what in zip(got, (le, xe.grad, we.grad, be.grad),
                              ("loss", "grad input", "grad weight", "grad bias")):
            close(a, e, 1e-2, f"replay {seed}: {what}")


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("form", ["dense_soft", "csr_bool", "padded32"])
@pytest.mark.parametrize("loss", ["focal", "asl_batchmean"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cuda_parity_with_float64_unfused_composition(backend, form, loss, dtype):
    if backend not in fl.available_backends("cuda"):
        pytest.skip(f"backend {backend} unavailable for cuda")
    n, h, c, chunk = (37, 16, 1001, 300) if form != "csr_bool" else (300, 8, 129, None)
    x, w, b, target, dense = make_problem(n, h, c, form)
    x, w, b = (t.to(dtype) for t in (x, w, b))
    fn, unfused, opts = loss_fns(loss, c)
    cuda_opts = {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in opts.items()}
    xs, ws, bs = (t.cuda().requires_grad_() for t in (x, w, b))
    got = fn(xs, ws, target.cuda(), linear_bias=bs, **cuda_opts, chunk_size=chunk,
             backend=backend)
    (got * 1.7).backward()
    want = reference(unfused, x, w, b, dense, opts)
    rel = 2e-5 if dtype == torch.float32 else 2e-2
    for a, e, what in zip((got, xs.grad, ws.grad, bs.grad), want,
                          ("loss", "grad input", "grad weight", "grad bias")):
        assert a.dtype == dtype, what
        close(a.cpu(), e, rel, what)
