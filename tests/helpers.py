"""Shared test helpers: inputs, tolerances and a forward+backward runner."""
from __future__ import annotations

import torch

import fused_losses

# (23, 41): 1/41 rounds so the row estimate needs its correction; (3, 2500) and
# (4099,): C >= BLOCK takes the single-wrap path.
SHAPES = [(1, 1), (37, 270), (129, 1001), (3, 5, 7), (1001,), (23, 41), (3, 2500), (4099,)]
LOGIT_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TARGET_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.bool, torch.uint8,
                 torch.int64, torch.int32]
# (rtol, atol as a fraction of the reference's max magnitude), per output dtype.
TOL = {torch.float32: (2e-5, 2e-6), torch.float16: (2e-3, 2e-3),
       torch.bfloat16: (1.6e-2, 1.6e-2), torch.float64: (1e-12, 1e-13)}


def triton_device() -> str:
    """Where Triton kernels run: the GPU, else the CPU interpreter."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def make_inputs(shape, logit_dtype=torch.float32, target_dtype=torch.float32,
                device="cpu", scale=3.0, seed=0, positive_rate=0.2):
    """Logits ~ N(0, scale²); hard targets with ``positive_rate`` positives, or
    soft targets in [0, 1] (a quarter of them exactly 0 or 1)."""
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=gen) * scale).to(logit_dtype)
    u = torch.rand(shape, generator=gen)
    if target_dtype.is_floating_point:
        t = torch.rand(shape, generator=gen)
        t = torch.where(u < 0.125, 0.0, torch.where(u > 0.875, 1.0, t))
    else:
        t = u < positive_rate
    return x.to(device), t.to(target_dtype).to(device)


def forward_backward(fn, x, upstream_seed=1, **kwargs):
    """(loss, d(Σ g·loss)/dx) with a fixed non-unit upstream gradient g."""
    x = x.detach().clone().requires_grad_(True)
    loss = fn(x, **kwargs)
    gen = torch.Generator().manual_seed(upstream_seed)
    g = (torch.rand(loss.shape, generator=gen) + 0.5).to(loss.dtype).to(loss.device)
    loss.backward(g)
    return loss.detach(), x.grad


def assert_close(actual, expected, dtype=None, what=""):
    """Elementwise |a-e| <= atol + rtol·|e|, atol relative to max |e|."""
    rtol, atol_frac = TOL[dtype or expected.dtype]
    a, e = actual.double().cpu(), expected.double().cpu()
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    scale = e.abs().max().item() if e.numel() else 0.0
    atol = atol_frac * max(scale, 1e-30)
    if (dtype or expected.dtype) == torch.float16:
        atol = max(atol, 2 * 2.0 ** -24)  # two steps of fp16's subnormal grid
    bad = ~((a - e).abs() <= atol + rtol * e.abs())
    bad &= ~((a.isnan() & e.isnan()) | (a == e))
    assert not bad.any(), (
        f"{what}: {int(bad.sum())}/{a.numel()} mismatches, max |diff| "
        f"{(a - e).abs().max().item():.3e} (atol {atol:.3e}, rtol {rtol})")


def parity(x, t, backend, dtype=None, **options):
    """Compare ``backend`` with the reference on loss and gradient."""
    fn = fused_losses.focal_bce
    got = forward_backward(lambda z: fn(z, t, backend=backend, **options), x)
    ref = forward_backward(lambda z: fn(z.cpu(), t.cpu(), backend="torch",
                                        **_cpu(options)), x)
    assert_close(got[0], ref[0], dtype or x.dtype, "loss")
    assert_close(got[1], ref[1], dtype or x.dtype, "grad")


def _cpu(options):
    return {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in options.items()}


def assert_compiled_step_matches_eager(model, forward, *inputs, state=None,
                                       compile_backend="inductor"):
    """``torch.compile(forward, fullgraph=True)`` gives eager's scalar loss and
    ``model.weight`` gradient (the backward runs through AOTAutograd).

    ``state``: a module whose buffers the step updates in place (GHMC's EMA);
    both runs start from its current buffers and must leave the same ones."""
    start = {} if state is None else {k: v.clone() for k, v in state.state_dict().items()}

    def step(fn):
        if state is not None:
            state.load_state_dict(start)
        model.zero_grad(set_to_none=True)
        loss = fn(*inputs)
        loss.backward()
        after = {} if state is None else {k: v.clone() for k, v in state.state_dict().items()}
        return loss.detach(), model.weight.grad.clone(), after

    eager = step(forward)
    compiled = step(torch.compile(forward, fullgraph=True, backend=compile_backend))
    assert_close(compiled[0], eager[0], what="loss")
    assert_close(compiled[1], eager[1], what="weight grad")
    for key, value in eager[2].items():
        assert_close(compiled[2][key], value, what=key)


def check_compiled_training_step(backend, device, reduction):
    """A compiled model+FocalBCE training step equals eager (see above)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 270).to(device)
    crit = fused_losses.FocalBCE(alpha=0.25, pos_weight=torch.full((270,), 2.0, device=device),
                                 reduction=reduction, backend=backend)
    h = torch.randn(64, 16, device=device)
    y = torch.rand(64, 270, device=device) < 0.05

    def forward(h, y):
        loss = crit(model(h), y)
        return loss if reduction == "mean" else loss.mean()

    assert_compiled_step_matches_eager(model, forward, h, y)


def capture_training_step(loss_fn, x):
    """Warm ``loss_fn(x).backward()`` up on a side stream, then capture it in a
    CUDA graph. Returns (graph, loss): replaying refills ``loss`` and ``x.grad``."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # compiles kernels outside the capture
        for _ in range(2):
            x.grad = None
            loss_fn(x).backward()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    x.grad = None
    with torch.cuda.graph(graph):
        loss = loss_fn(x)
        loss.backward()
    return graph, loss


def make_class_inputs(shape, logit_dtype=torch.float32, target_dtype=torch.int64, device="cpu",
                      scale=3.0, seed=0, ignore_index=None, ignore_every=5):
    """Logits of ``shape`` (class dim 1, or 0 for 1-D) and class-index targets,
    every ``ignore_every``-th one set to ``ignore_index`` when it is given."""
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=gen) * scale).to(logit_dtype)
    n_classes = shape[1] if len(shape) > 1 else shape[0]
    t_shape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    t = torch.randint(0, n_classes, t_shape, generator=gen)
    if ignore_index is not None and t.numel():
        t.view(-1)[::ignore_every] = ignore_index
    return x.to(device), t.to(target_dtype).to(device)


def parity_fn(fn, x, t, backend, dtype=None, **options):
    """``fn(backend=...)`` against ``fn(backend="torch")`` on loss and gradient."""
    got = forward_backward(lambda z: fn(z, t, backend=backend, **options), x)
    ref = forward_backward(lambda z: fn(z.cpu(), t.cpu(), backend="torch",
                                        **_cpu(options)), x)
    assert_close(got[0], ref[0], dtype or x.dtype, "loss")
    assert_close(got[1], ref[1], dtype or x.dtype, "grad")


def _rank_entry(rank, fn, args):
    torch.set_num_threads(1)  # WORLD ranks on the CI machine's two cores; no OpenMP pool after a fork
    fn(rank, *args)


def run_ranks(fn, args_for_attempt, world=2,
              plan=(("fork", 10), ("fork", 10), ("spawn", 90), ("spawn", 90))):
    """Run ``fn(rank, *args_for_attempt(attempt))`` on ``world`` processes, one thread each.

    Forked first: a spawned rank re-imports torch, fused_losses and the test
    module (~10 s on the 2-core CI machine), a forked one starts at once. An
    attempt that fails or hangs past its seconds (a fork after CUDA was
    initialised; the rare gloo hang seen on that machine) is killed and retried,
    spawned, with the fresh rendezvous file ``args_for_attempt`` gives; results
    are only ever read from an attempt that completed.
    """
    import time

    import pytest
    import torch.multiprocessing as mp

    errors = []
    for attempt, (method, seconds) in enumerate(plan):
        ctx = mp.start_processes(_rank_entry, args=(fn, args_for_attempt(attempt)), nprocs=world,
                                 join=False, start_method=method)
        deadline = time.monotonic() + seconds
        try:
            while not ctx.join(timeout=0.1):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{method}ed ranks hung for {seconds} s")
            return
        except Exception as e:  # noqa: BLE001 - retried, reported below
            errors.append(f"{method}: {e}")
            for proc in ctx.processes:
                proc.kill()
    pytest.fail("distributed ranks failed on every attempt:\n" + "\n".join(errors))
