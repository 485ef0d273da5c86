"""BCEWithLogitsLoss and binary_cross_entropy_with_logits take torch's full
signature: positional calls, the legacy size_average/reduce flags (value,
gradient and warning as torch's), and torch's state_dict keys."""
import inspect
import itertools
import warnings

import pytest
import torch

import fused_losses
from fused_losses import BCEWithLogitsLoss, binary_cross_entropy_with_logits

LEGACY = [None, True, False]
FLAGS = list(itertools.product(LEGACY, LEGACY))  # (size_average, reduce)
DEPRECATED = r"size_average and reduce args will be deprecated"


def _data(seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 5, generator=gen, dtype=torch.float32) * 3
    y = (torch.rand(6, 5, generator=gen) < 0.4).float()
    w = torch.rand(5, generator=gen) + 0.5
    pw = torch.rand(5, generator=gen) * 4 + 0.25
    return x, y, w, pw


def _loss_and_grad(fn, x, y):
    """fn(x, y) and d(loss)/dx for a non-unit upstream gradient."""
    x = x.detach().clone().requires_grad_(True)
    loss = fn(x, y)
    gen = torch.Generator().manual_seed(1)
    upstream = torch.rand(loss.shape, generator=gen) + 0.5
    (grad,) = torch.autograd.grad(loss, x, upstream)
    return loss.detach(), grad


def _assert_same(ours, theirs):
    (loss, grad), (ref_loss, ref_grad) = ours, theirs
    assert loss.shape == ref_loss.shape and loss.dtype == ref_loss.dtype
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)


def test_signatures_match_torch():
    for ours, theirs in [(BCEWithLogitsLoss.__init__, torch.nn.BCEWithLogitsLoss.__init__),
                         (binary_cross_entropy_with_logits,
                          torch.nn.functional.binary_cross_entropy_with_logits)]:
        names = list(inspect.signature(ours).parameters)
        ref = list(inspect.signature(theirs).parameters)
        assert names == ref, (names, ref)
        defaults = [p.default for p in inspect.signature(ours).parameters.values()]
        ref_defaults = [p.default for p in inspect.signature(theirs).parameters.values()]
        assert defaults == ref_defaults


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_positional_module_equals_torch(reduction):
    x, y, w, pw = _data()
    ours = BCEWithLogitsLoss(w, None, None, reduction, pw)
    theirs = torch.nn.BCEWithLogitsLoss(w, None, None, reduction, pw)
    assert ours.reduction == theirs.reduction == reduction
    _assert_same(_loss_and_grad(ours, x, y), _loss_and_grad(theirs, x, y))


def test_positional_functional_equals_torch():
    x, y, w, pw = _data()
    for reduction in ("none", "mean", "sum"):
        _assert_same(
            _loss_and_grad(lambda a, b: binary_cross_entropy_with_logits(
                a, b, w, None, None, reduction, pw), x, y),
            _loss_and_grad(lambda a, b: torch.nn.functional.binary_cross_entropy_with_logits(
                a, b, w, None, None, reduction, pw), x, y))


def _build(cls, size_average, reduce, reduction):
    """cls(...) with torch's deprecation warning checked: raised iff a flag is set."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = cls(None, size_average, reduce, reduction)
    legacy = size_average is not None or reduce is not None
    hits = [c for c in caught if "size_average and reduce" in str(c.message)]
    assert len(hits) == (1 if legacy else 0), [str(c.message) for c in caught]
    return module


@pytest.mark.parametrize("size_average,reduce", FLAGS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_legacy_flags_module_equals_torch(size_average, reduce, reduction):
    x, y, w, pw = _data(2)
    ours = _build(BCEWithLogitsLoss, size_average, reduce, reduction)
    theirs = _build(torch.nn.BCEWithLogitsLoss, size_average, reduce, reduction)
    assert ours.reduction == theirs.reduction
    _assert_same(_loss_and_grad(ours, x, y), _loss_and_grad(theirs, x, y))


@pytest.mark.parametrize("size_average,reduce", FLAGS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_legacy_flags_functional_equals_torch(size_average, reduce, reduction):
    x, y, w, pw = _data(3)
    legacy = size_average is not None or reduce is not None

    def call(fn):
        def loss(a, b):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                out = fn(a, b, w, size_average, reduce, reduction, pw)
            hits = [c for c in caught if "size_average and reduce" in str(c.message)]
            assert len(hits) == (1 if legacy else 0)
            return out
        return _loss_and_grad(loss, x, y)

    _assert_same(call(binary_cross_entropy_with_logits),
                 call(torch.nn.functional.binary_cross_entropy_with_logits))
    # keywords too
    with pytest.warns(UserWarning, match=DEPRECATED) if legacy else warnings.catch_warnings():
        ours = binary_cross_entropy_with_logits(x, y, size_average=size_average,
                                                reduce=reduce, reduction=reduction)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = torch.nn.functional.binary_cross_entropy_with_logits(
            x, y, size_average=size_average, reduce=reduce, reduction=reduction)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("with_weight,with_pos_weight", list(itertools.product([False, True],
                                                                                repeat=2)))
def test_state_dict_keys_equal_torch(with_weight, with_pos_weight):
    _, _, w, pw = _data()
    kwargs = dict(weight=w if with_weight else None, pos_weight=pw if with_pos_weight else None)
    ours, theirs = BCEWithLogitsLoss(**kwargs), torch.nn.BCEWithLogitsLoss(**kwargs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [name for name, _ in ours.named_buffers()] == \
        [name for name, _ in theirs.named_buffers()]
    assert not list(ours.parameters())
    # torch's checkpoint loads into ours (strictly) and the other way round
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    # buffers follow .to()
    assert all(b.dtype == torch.float64 for b in ours.double().buffers())


def test_invalid_reduction_still_raises():
    with pytest.raises(ValueError, match="reduction"):
        BCEWithLogitsLoss(None, None, None, "batchmean")
    assert fused_losses.BCEWithLogitsLoss is BCEWithLogitsLoss


@pytest.mark.parametrize("call", [
    lambda x, y, w, pw: BCEWithLogitsLoss(w, "sum", pw),          # the old order
    lambda x, y, w, pw: BCEWithLogitsLoss(w, None, pw),
    lambda x, y, w, pw: binary_cross_entropy_with_logits(x, y, w, "sum", pw),
    lambda x, y, w, pw: binary_cross_entropy_with_logits(x, y, w, None, pw),
])
def test_old_positional_order_is_refused(call):
    """torch would read "sum" or a tensor as a truthy flag (or fail on bool(tensor));
    we refuse it and name the order."""
    x, y, w, pw = _data()
    with pytest.raises(TypeError, match=r"must be None or a bool.*reduction= and pos_weight="):
        call(x, y, w, pw)
