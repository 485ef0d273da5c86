"""The softmax focal reference against F.cross_entropy, a float64 transcription
of the formula and gradcheck."""
import itertools

import pytest
import torch
import torch.nn.functional as F

import fused_losses
from helpers import assert_close, forward_backward, make_class_inputs

REDUCTIONS = ["none", "mean", "sum"]
SHAPES = [(37, 11), (4, 6, 3, 5), (7,)]


def transcription(x, y, gamma, alpha, ignore_index, eps, reduction):
    """The docstring's formula, row by row in float64 Python loops over classes."""
    x = x.double().movedim(1, -1).reshape(-1, x.shape[1]) if x.dim() > 1 else x.double()[None]
    y = y.reshape(-1)
    n_classes = x.shape[1]
    a = torch.ones(n_classes, dtype=torch.float64) if alpha is None else alpha.double()
    losses, weights = [], []
    for row, cls in zip(x, y.tolist()):
        if cls == ignore_index:
            losses.append(torch.zeros((), dtype=torch.float64))
            weights.append(0.0)
            continue
        logp = row - torch.logsumexp(row, 0)
        ce = (1 - eps) * -a[cls] * logp[cls] + eps / n_classes * sum(
            -a[c] * logp[c] for c in range(n_classes))
        losses.append((1 - logp[cls].exp()) ** gamma * ce)
        weights.append(float(a[cls]))
    loss = torch.stack(losses)
    return {"none": loss, "sum": loss.sum(), "mean": loss.sum() / sum(weights)}[reduction]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("with_alpha,ignore,eps", list(itertools.product(
    [False, True], [False, True], [0.0, 0.15])))
@pytest.mark.parametrize("shape", SHAPES)
def test_gamma0_equals_cross_entropy(shape, with_alpha, ignore, eps, reduction):
    x, t = make_class_inputs(shape, ignore_index=-100 if ignore else None)
    if len(shape) == 1 and ignore:
        t = t.new_tensor(-100)
    c = shape[1] if len(shape) > 1 else shape[0]
    alpha = torch.rand(c, generator=torch.Generator().manual_seed(2)) + 0.1 if with_alpha else None
    got = forward_backward(lambda z: fused_losses.softmax_focal_loss(
        z, t, gamma=0.0, alpha=alpha, label_smoothing=eps, reduction=reduction,
        backend="torch"), x)
    ref = forward_backward(lambda z: F.cross_entropy(
        z, t, weight=alpha, label_smoothing=eps, reduction=reduction), x)
    assert_close(got[0], ref[0], what="loss")
    assert_close(got[1], ref[1], what="grad")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("gamma", [0.5, 2.0])
@pytest.mark.parametrize("with_alpha,eps", [(False, 0.0), (True, 0.1)])
@pytest.mark.parametrize("shape", [(9, 7), (3, 4, 2)])
def test_matches_float64_transcription(shape, with_alpha, eps, gamma, reduction):
    x, t = make_class_inputs(shape, torch.float64, ignore_index=-1)
    alpha = torch.rand(shape[1], dtype=torch.float64) if with_alpha else None
    got = fused_losses.softmax_focal_loss(x, t, gamma=gamma, alpha=alpha, ignore_index=-1,
                                          label_smoothing=eps, reduction=reduction,
                                          backend="torch")
    expected = transcription(x, t, gamma, alpha, -1, eps, reduction)
    assert_close(got, expected.reshape(got.shape), torch.float64)


@pytest.mark.parametrize("options", [
    dict(gamma=2.0), dict(gamma=0.5, label_smoothing=0.2), dict(gamma=1.5, alpha="a"),
    dict(gamma=2.0, alpha="a", label_smoothing=0.1, reduction="sum"),
    dict(gamma=0.7, reduction="none"),
])
def test_gradcheck_float64(options):
    x, t = make_class_inputs((5, 4, 3), torch.float64, ignore_index=-100, scale=2.0)
    opts = dict(options)
    if opts.get("alpha") == "a":
        opts["alpha"] = torch.rand(4, dtype=torch.float64) + 0.2
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda z: fused_losses.softmax_focal_loss(z, t, backend="torch", **opts), (x,))


@pytest.mark.parametrize("gamma", [0.3, 2.0])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_extreme_logits_finite(gamma, eps):
    x = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 5.0], [90.0, -90.0, 0.0], [0.0, 0.0, 0.0]])
    t = torch.tensor([0, 0, 0, 2])
    loss, grad = forward_backward(lambda z: fused_losses.softmax_focal_loss(
        z, t, gamma=gamma, label_smoothing=eps, reduction="none", backend="torch"), x)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()


def test_out_of_range_target_refused_on_cpu_else_nan_row(monkeypatch):
    x, t = make_class_inputs((4, 5))
    t[1] = 7
    with pytest.raises(ValueError, match="class index 7, outside"):
        fused_losses.softmax_focal_loss(x, t, backend="torch")
    # Where values are not read (a GPU outside strict mode), the row is NaN.
    monkeypatch.setattr(fused_losses._api, "checks_values", lambda tensor: False)
    loss = fused_losses.softmax_focal_loss(x, t, reduction="none", backend="torch")
    assert loss[1].isnan() and torch.isfinite(loss[[0, 2, 3]]).all()
    with pytest.raises(ValueError, match="7"):
        fused_losses.check_class_targets(t, 5, ignore_index=-100)
    t[1] = -100
    fused_losses.check_class_targets(t, 5, ignore_index=-100)
