"""The fused linear heads (``linear_focal_bce``, ``linear_asymmetric_loss`` and
their modules): parity with the unfused float64 composition
``focal_bce(x @ W.T + b, dense)`` / ``asymmetric_loss(...)`` for every backend,
target form and chunking, plus API behaviour, the chunk rule, the memory peak
and argument errors.

Integration (torch.compile, opcheck, autocast, DDP, CUDA graphs) is in
test_linear_head_integration.py.
"""
import itertools

import pytest
import torch
import torch.nn.functional as F

import fused_losses as fl
from fused_losses import _linear_chunks

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta",
                                        "ignore:Sparse invariant checks are implicitly")

BACKENDS = fl.available_backends("cpu")
FORMS = ["dense_bool", "dense_soft", "csr_bool", "csr_soft", "padded64", "padded32"]
LOSSES = ["focal", "asl", "asl_batchmean"]
# (N, H, C, chunk_size): class chunks with a partial last chunk (300, 300, 300, 101),
# row chunks (C < N, chunk_size None: 16-row chunks, the last one 6 rows).
# The Triton interpreter is slow: it gets smaller shapes with the same structure.
LAYOUTS = {"classes": (37, 16, 1001, 300), "rows": (150, 8, 67, None),
           "classes_small": (13, 16, 301, 128), "rows_small": (40, 8, 23, None)}
REL = {torch.float32: 2e-5, torch.bfloat16: 2e-2}  # of max |grad| and of |loss|


@pytest.fixture(autouse=True)
def one_thread():
    """The shapes here are small: with two OpenMP threads on a busy 2-core machine
    (xdist workers) each op waits on spinning threads, about 20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def close(actual, expected, rel, what=""):
    """max |actual - expected| <= rel · max |expected| (the library's contract)."""
    a, e = actual.detach().double(), expected.detach().double()
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    err, scale = (a - e).abs().max().item(), e.abs().max().item()
    assert err <= rel * scale, f"{what}: max |diff| {err:.3e} > {rel} * {scale:.3e}"


def make_problem(n, h, c, form, seed=0, k=5):
    """float64 (x, w, b), the target in ``form`` and its dense [N, C] float64 labels."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, h, generator=gen, dtype=torch.float64)
    w = torch.randn(c, h, generator=gen, dtype=torch.float64) / 2
    b = torch.randn(c, generator=gen, dtype=torch.float64)
    idx = torch.randint(0, c, (n, k), generator=gen)
    idx[torch.rand(n, k, generator=gen) < 0.3] = -1
    idx[:, -1] = idx[:, 0]  # a class listed twice in a row is one positive
    dense = torch.zeros(n, c + 1, dtype=torch.float64)
    dense.scatter_(1, torch.where(idx < 0, c, idx), 1.0)
    dense = dense[:, :c].contiguous()
    if form.endswith("soft"):  # soft labels, some exactly 0 or 1, on a sparse pattern
        soft = torch.rand(n, c, generator=gen, dtype=torch.float64)
        soft[:, ::7] = 1.0
        dense = torch.where(dense > 0, soft, torch.zeros((), dtype=torch.float64))
    labels = dense.bool() if form.endswith("bool") else dense.float()
    target = {"dense": labels, "csr": labels.to_sparse_csr(), "padded64": idx,
              "padded32": idx.int()}[form.split("_")[0]]
    if form.endswith("soft"):
        dense = dense.float().double()  # the labels as the head sees them (fp32)
    return x, w, b, target, dense


def loss_fns(loss, c, gen_seed=1):
    """(linear function, unfused function, options with float32 tensors)."""
    pw = torch.rand(c, generator=torch.Generator().manual_seed(gen_seed)) + 0.5
    if loss == "focal":
        return fl.linear_focal_bce, fl.focal_bce, dict(gamma=2.0, alpha=0.25, pos_weight=pw)
    opts = dict(pos_weight=pw)
    if loss == "asl_batchmean":
        opts["reduction"] = "batchmean"
    return fl.linear_asymmetric_loss, fl.asymmetric_loss, opts


def f64(opts):
    return {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in opts.items()}


def reference(unfused, x, w, b, dense, opts, upstream=1.7):
    """Loss and (input, weight, bias) grads of the float64 unfused composition."""
    xr, wr, br = (t.detach().double().requires_grad_() for t in (x, w, b))
    loss = unfused(xr @ wr.T + br, dense, **f64(opts), backend="torch")
    (loss * upstream).backward()
    return loss.detach(), xr.grad, wr.grad, br.grad


def run_head(fn, x, w, b, target, opts, upstream=1.7, **kw):
    xs, ws, bs = (t.detach().clone().requires_grad_() for t in (x, w, b))
    loss = fn(xs, ws, target, linear_bias=bs, **opts, **kw)
    (loss * upstream).backward()
    return loss.detach(), xs.grad, ws.grad, bs.grad


def _cases():
    """Pairwise cover of form × loss × layout × dtype per backend: every form meets
    every loss, and each of them both layouts and both dtypes; ``torch`` takes the
    complementary layouts of ``cpu``. The Triton interpreter gets three cases."""
    cases = []
    for backend, shift in (("cpu", 0), ("torch", 1)):
        for (i, form), (j, loss) in itertools.product(enumerate(FORMS), enumerate(LOSSES)):
            layout = ("classes", "rows")[(i + j + shift) % 2]
            dtype = (torch.float32, torch.bfloat16)[(i // 2 + j) % 2]
            cases.append((backend, form, loss, layout, dtype))
    cases += [("triton", "dense_bool", "focal", "classes_small", torch.float32),
              ("triton", "csr_soft", "asl", "rows_small", torch.bfloat16),
              ("triton", "padded32", "asl_batchmean", "classes_small", torch.float32)]
    return [pytest.param(*c, id="-".join([c[0], c[1], c[2], c[3], str(c[4])[6:]]))
            for c in cases]


@pytest.mark.parametrize("backend,form,loss,layout,dtype", _cases())
def test_parity_with_float64_unfused_composition(backend, form, loss, layout, dtype):
    if backend not in BACKENDS:
        pytest.skip(f"backend {backend} unavailable here")
    n, h, c, chunk = LAYOUTS[layout]
    x, w, b, target, dense = make_problem(n, h, c, form)
    x, w, b = (t.to(dtype) for t in (x, w, b))  # the reference sees the rounded values
    fn, unfused, opts = loss_fns(loss, c)
    got = run_head(fn, x, w, b, target, opts, chunk_size=chunk, backend=backend)
    want = reference(unfused, x, w, b, dense, opts)
    assert got[0].dtype == dtype and got[1].dtype == dtype and got[2].dtype == dtype
    for g, e, what in zip(got, want, ("loss", "grad input", "grad weight", "grad bias")):
        close(g, e, REL[dtype], what)


def test_layouts_chunk_as_intended():
    """The parity layouts really run several chunks, over classes and over rows."""
    for name, (n, _, c, chunk) in LAYOUTS.items():
        for dtype, tb in itertools.product((torch.float32, torch.bfloat16), (1, 4)):
            p = _linear_chunks.plan(n, c, dtype, "cpu", tb, chunk)
            length = n if name.startswith("rows") else c
            assert p.by_rows == name.startswith("rows") and p.count >= 3, (name, p)
            assert length % p.size, (name, p)  # a partial last chunk


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_gamma0_is_bce_with_logits_of_the_linear_layer(backend):
    x, w, b, target, dense = make_problem(37, 16, 1001, "padded64", seed=3)
    x, w, b = (t.float() for t in (x, w, b))
    pw = torch.rand(1001) + 0.5
    got = run_head(fl.linear_focal_bce, x, w, b, target, dict(gamma=0.0, pos_weight=pw),
                   chunk_size=300, backend=backend)
    want = run_head(lambda xs, ws, t, linear_bias: F.binary_cross_entropy_with_logits(
        F.linear(xs, ws, linear_bias), dense.float(), pos_weight=pw), x, w, b, target, {})
    for g, e, what in zip(got, want, ("loss", "grad input", "grad weight", "grad bias")):
        close(g, e, 2e-5, what)


@pytest.mark.parametrize("backend", ["cpu", "torch"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("case", ["all_grads", "frozen_weight", "input_no_grad", "no_grad"])
def test_bias_none_frozen_weight_and_no_grad(backend, bias, case):
    # Two or more gradients not needed: the op's empty outputs must not alias.
    c = 301
    x, w, b, target, dense = make_problem(37, 16, c, "csr_bool", seed=4)
    if not bias:
        b = torch.zeros(c, dtype=torch.float64)
    fn, unfused, opts = loss_fns("focal", c)
    want = reference(unfused, x, w, b, dense, opts)
    xs, ws = x.float().requires_grad_(case != "input_no_grad"), w.float()
    ws.requires_grad_(case != "frozen_weight")
    bs = b.float().requires_grad_() if bias else None
    with torch.set_grad_enabled(case != "no_grad"):
        loss = fn(xs, ws, target, linear_bias=bs, **opts, chunk_size=128, backend=backend)
    close(loss, want[0], 2e-5, "loss")
    if case == "no_grad":
        assert not loss.requires_grad
        return
    (loss * 1.7).backward()
    for t, ref, what in ((xs, want[1], "input"), (ws, want[2], "weight"), (bs, want[3], "bias")):
        if t is not None and t.requires_grad:
            close(t.grad, ref, 2e-5, f"grad {what}")
        elif t is not None:
            assert t.grad is None, what


@pytest.mark.parametrize("backend", ["cpu", "torch"])
@pytest.mark.parametrize("layout", ["classes", "rows"])
def test_deterministic(backend, layout):
    if backend == "cpu":
        torch.set_num_threads(2)  # the C++ kernels split a chunk over threads
    n, h, c, chunk = LAYOUTS[layout]
    x, w, b, target, _ = make_problem(n, h, c, "csr_soft", seed=5)
    fn, _, opts = loss_fns("asl", c)
    x, w, b = (t.float() for t in (x, w, b))
    first = run_head(fn, x, w, b, target, opts, chunk_size=chunk, backend=backend)
    second = run_head(fn, x, w, b, target, opts, chunk_size=chunk, backend=backend)
    for a, e in zip(first, second):
        assert torch.equal(a, e)


def test_sparse_duplicates_and_listed_zeros():
    """CSR float duplicates are summed (as ``to_dense``); a listed hard 0 stays 0;
    a padded class listed twice counts once (reference: a hand-built dense)."""
    n, c = 3, 40
    x, w, b, _, _ = make_problem(n, 6, c, "dense_bool", seed=6)
    crow = torch.tensor([0, 3, 3, 5])
    col = torch.tensor([2, 2, 39, 0, 7])
    soft = torch.sparse_csr_tensor(crow, col, torch.tensor([0.25, 0.5, 1.0, 0.125, 0.0]), (n, c))
    hard = torch.sparse_csr_tensor(crow, col, torch.tensor([1, 1, 0, 1, 1]), (n, c))
    padded = torch.tensor([[2, 2, 39], [-1, -1, -1], [0, 7, 0]])
    dense_soft = torch.zeros(n, c, dtype=torch.float64)
    dense_soft[0, 2], dense_soft[0, 39], dense_soft[2, 0] = 0.75, 1.0, 0.125
    dense_hard = torch.zeros(n, c, dtype=torch.float64)
    dense_hard[0, 2] = dense_hard[2, 0] = dense_hard[2, 7] = 1.0
    dense_pad = dense_hard.clone()
    dense_pad[0, 39] = 1.0
    for target, dense in ((soft, dense_soft), (hard, dense_hard), (padded, dense_pad)):
        for backend in ("cpu", "torch"):
            got = run_head(fl.linear_focal_bce, *(t.float() for t in (x, w, b)), target, {},
                           chunk_size=16, backend=backend)
            want = reference(fl.focal_bce, x, w, b, dense, {})
            for g, e in zip(got, want):
                close(g, e, 2e-5, f"{backend} {target.layout}")


def test_chunk_rule():
    """The documented rule of ``_linear_chunks.plan``."""
    f32, bf16 = torch.float32, torch.bfloat16
    # 5 % of the N×C fp32 logits: 0.05·64·100000·4 = 1.28e6 bytes over 64 rows of
    # 2·4 + 1 bytes per element -> 2222 classes -> 17 whole granules of 128
    assert _linear_chunks.plan(64, 100_000, f32, "cpu", 1) == (False, 2176, 46)
    # bf16 logits and soft (4-byte) labels: 1.28e6 / (64·8) = 2500 -> 2432
    assert _linear_chunks.plan(64, 100_000, bf16, "cpu", 4) == (False, 2432, 42)
    # the CPU cap: 32 MiB / (4096·9) = 910 -> 896 classes (5 % would be 819 MB)
    assert _linear_chunks.plan(4096, 10**6, f32, "cpu", 1) == (False, 896, 1117)
    # on CUDA 5 % (0.05·4096·10⁶·4 -> 22222 -> 22144 classes) is below the 1 GiB
    # cap, which binds at 10⁷ classes: 2³⁰ / (4096·9) = 29127 -> 29056
    assert _linear_chunks.plan(4096, 10**6, f32, "cuda", 1) == (False, 22144, 46)
    assert _linear_chunks.plan(4096, 10**7, f32, "cuda", 1) == (False, 29056, 345)
    # never below one granule: 128 classes, 16 rows
    assert _linear_chunks.plan(1000, 1000, f32, "cpu", 1) == (False, 128, 8)
    assert _linear_chunks.plan(1000, 50, f32, "cpu", 1) == (True, 16, 63)
    # over rows when C < N: 0.05·100000·500·4 / (500·9) = 2222 rows -> 2208
    assert _linear_chunks.plan(100_000, 500, f32, "cpu", 1) == (True, 2208, 46)
    # chunk_size forces class chunks, clipped to C
    assert _linear_chunks.plan(100_000, 500, f32, "cpu", 1, 64) == (False, 64, 8)
    assert _linear_chunks.plan(10, 50, f32, "cpu", 1, 1000) == (False, 50, 1)
    assert _linear_chunks.reduction_factor("mean", 4, 5) == 1 / 20
    assert _linear_chunks.reduction_factor("batchmean", 4, 5) == 1 / 4
    assert _linear_chunks.reduction_factor("sum", 4, 5) == 1.0


@pytest.mark.skipif("cpu" not in BACKENDS, reason="C++ extension not built")
def test_memory_peak_is_the_gradients_plus_one_chunk():
    from bench._memory import cpu_peak_extra_bytes
    n, h, c = 256, 32, 40_000
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(n, h, generator=gen, requires_grad=True)
    w = (torch.randn(c, h, generator=gen) / 4).requires_grad_()
    b = torch.zeros(c, requires_grad=True)
    idx = torch.randint(0, c, (n, 10), generator=gen)  # ~10 positives per row
    dense = torch.zeros(n, c, dtype=torch.bool).scatter_(1, idx, True)
    grads = (x.numel() + w.numel() + b.numel()) * 4

    def fused():  # upstream 1.7: the backward's scaling pass runs too
        x.grad = w.grad = b.grad = None
        (fl.linear_focal_bce(x, w, idx, linear_bias=b, backend="cpu") * 1.7).backward()

    def unfused():
        x.grad = w.grad = b.grad = None
        (fl.focal_bce(F.linear(x, w, b), dense, backend="cpu") * 1.7).backward()

    fused()  # warm-up
    peak = cpu_peak_extra_bytes(fused)
    assert peak <= grads + 0.10 * n * c * 4, (peak, grads)
    assert cpu_peak_extra_bytes(unfused) >= 3 * peak


def _csr_bad_col():
    return torch.sparse_csr_tensor(torch.tensor([0, 1, 1]), torch.tensor([9]),
                                   torch.tensor([1.0]), (2, 9), check_invariants=False)


ERRORS = [  # (id, exception, message start, target (None: padded), kwargs, x/w shapes)
    ("input-1d", ValueError, r"input must be \[N, H\]", None, {}, (8,), (5, 8)),
    ("weight-H", ValueError, r"linear_weight must be \[C, H\]", None, {}, (2, 8), (9, 7)),
    ("bias-shape", ValueError, r"linear_bias must be \[C\] = \[9\]", None,
     {"linear_bias": torch.zeros(8)}),
    ("weight-dtype", TypeError, "linear_weight must have the input's dtype", None, {},
     (2, 8), (9, 8), torch.float64),
    ("int-K-eq-C", ValueError, "an torch.int64 target .* is ambiguous",
     lambda: torch.zeros(2, 9, dtype=torch.int64), {}),
    ("padded-ge-C", ValueError, r"padded target indices must lie in \[-1, 9\).*got 9",
     lambda: torch.tensor([[0, 9], [1, -1]]), {}),
    ("padded-lt-1", ValueError, r"padded target indices must lie in \[-1, 9\).*got -2",
     lambda: torch.tensor([[0, -2], [1, -1]]), {}),
    ("csr-shape", ValueError, r"sparse CSR target shape \(2, 8\)",
     lambda: torch.eye(2, 8).to_sparse_csr(), {}),
    ("csr-col", ValueError, "sparse target column indices .* got 9", _csr_bad_col, {}),
    ("dense-soft>1", ValueError, "target holds 1.5", lambda: torch.full((2, 9), 1.5), {}),
    ("csr-soft>1", ValueError, "target holds 1.5",
     lambda: (torch.eye(2, 9) * 1.5).to_sparse_csr(), {}),
    ("coo", TypeError, "target must be .* got layout torch.sparse_coo",
     lambda: torch.eye(2, 9).to_sparse(), {}),
    ("reduction-none", ValueError, "reduction must be one of", None, {"reduction": "none"}),
    ("chunk-0", ValueError, "chunk_size must be >= 1", None, {"chunk_size": 0}),
    ("chunk-True", TypeError, "chunk_size must be None or an int", None, {"chunk_size": True}),
    ("chunk-2.5", TypeError, "chunk_size must be None or an int", None, {"chunk_size": 2.5}),
    ("backend", ValueError, "backend must be one of", None, {"backend": "cuDNN"}),
    ("target-grad", ValueError, r"the linear heads do not support target\.requires_grad",
     lambda: torch.zeros(2, 9).requires_grad_(), {}),
    ("pos_weight-C+1", ValueError, r"pos_weight must be .*\[C\] = \[9\].*\(10,\)", None,
     {"pos_weight": torch.ones(10)}),
    ("pos_weight-2d", ValueError, r"pos_weight must be .*\(2, 9\)", None,
     {"pos_weight": torch.ones(2, 9)}),
    ("gamma<0", ValueError, "gamma must be in", None, {"gamma": -0.5}),
]


@pytest.mark.parametrize("exc,match,target,kwargs,shapes",
                         [pytest.param(*e[1:5], e[5:], id=e[0]) for e in ERRORS])
def test_errors_name_the_argument(exc, match, target, kwargs, shapes):
    xshape, wshape, dtype = shapes + ((2, 8), (9, 8), torch.float32)[len(shapes):]
    x, w = torch.randn(xshape), torch.randn(wshape, dtype=dtype)
    target = torch.tensor([[0, 3], [8, -1]]) if target is None else target()
    with pytest.raises(exc, match="^" + match):
        fl.linear_focal_bce(x, w, target, **kwargs)
    if "gamma" not in kwargs:  # the same checks on the ASL head
        with pytest.raises(exc, match="^" + match):
            fl.linear_asymmetric_loss(x, w, target, **kwargs)


def test_module_init_buffers_and_state_dict():
    pw = torch.rand(301) + 0.5
    torch.manual_seed(11)
    lin = torch.nn.Linear(24, 301)
    torch.manual_seed(11)
    head = fl.LinearFocalBCE(24, 301, gamma=1.5, alpha=0.25, pos_weight=pw)
    assert torch.equal(head.weight, lin.weight) and torch.equal(head.bias, lin.bias)
    assert set(head.state_dict()) == {"weight", "bias", "pos_weight"}
    assert "pos_weight" in dict(head.named_buffers())
    assert set(dict(head.named_parameters())) == {"weight", "bias"}
    assert set(fl.LinearAsymmetricLoss(4, 9, bias=False).state_dict()) == {"weight"}
    h64 = fl.LinearFocalBCE(4, 9, pos_weight=torch.ones(9)).to(torch.float64)
    assert h64.pos_weight.dtype == torch.float64 and h64.weight.dtype == torch.float64
    r = repr(head)
    assert "in_features=24" in r and "out_features=301" in r and "pos_weight=tensor" in r
    assert fl.LinearAsymmetricLoss(4, 9).reduction == "sum"
    assert fl.LinearFocalBCE(4, 9).reduction == "mean"


def test_module_forward_logits_and_prior_bias():
    x, _, _, target, dense = make_problem(37, 24, 301, "padded64", seed=8)
    x = x.float()
    pw = torch.rand(301) + 0.5
    for cls, opts in ((fl.LinearFocalBCE, dict(gamma=1.5, alpha=0.25, pos_weight=pw)),
                      (fl.LinearAsymmetricLoss, dict(gamma_neg=3.0, clip=0.1, pos_weight=pw,
                                                     reduction="batchmean"))):
        head = cls(24, 301, chunk_size=128, **opts)
        func = fl.linear_focal_bce if cls is fl.LinearFocalBCE else fl.linear_asymmetric_loss
        assert torch.equal(head(x, target), func(x, head.weight, target, linear_bias=head.bias,
                                                 chunk_size=128, **opts)), cls.__name__
        assert torch.equal(head.logits(x), F.linear(x, head.weight, head.bias))
    counts = torch.randint(1, 50, (301,)).float()
    assert head.init_prior_bias(counts, 100) is head
    assert torch.equal(head.bias, fl.prior_bias(counts, 100))
    assert head.bias.requires_grad  # still a trainable parameter
    # float64 (reference path), buffers included: the float64 composition
    head = fl.LinearFocalBCE(24, 301, alpha=0.25, pos_weight=pw).to(torch.float64)
    x64 = x.double()
    want = fl.focal_bce(F.linear(x64, head.weight, head.bias), dense, alpha=0.25,
                        pos_weight=pw.double(), backend="torch")
    got = head(x64, target)
    assert got.dtype == torch.float64
    close(got, want, 1e-12, "float64 module")
    with pytest.raises(ValueError, match="bias"):
        fl.LinearFocalBCE(4, 9, bias=False).init_prior_bias(torch.ones(9), 10)


@pytest.mark.parametrize("kwargs,match", [({"gamma": -1.0}, "gamma"),
                                          ({"reduction": "none"}, "reduction"),
                                          ({"reduction": "batchmean"}, "reduction"),
                                          ({"chunk_size": 0}, "chunk_size"),
                                          ({"backend": "gpu"}, "backend")])
def test_module_construction_errors(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fl.LinearFocalBCE(4, 9, **kwargs)
