"""fused_losses.weights: hand-computed values, degenerate classes, effective-number β,
the sampler's effect on label frequencies, bad input, and the worked example.
label_counts's streaming and progress bar: tests/test_counts.py."""
import doctest
import importlib.util
import math
import pathlib
import sys
import warnings

import pytest
import torch
from torch.utils.data import WeightedRandomSampler

import fused_losses
from fused_losses import (label_counts, multilabel_sample_weights, pos_weight_from_counts,
                          prior_bias, weights)

ROOT = pathlib.Path(__file__).resolve().parents[1]
COUNTS, N = torch.tensor([1, 2, 4, 8]), 10


def close(actual, expected):
    expected = torch.as_tensor(expected, dtype=torch.float64)
    assert actual.dtype == torch.float32, actual.dtype
    torch.testing.assert_close(actual.double(), expected, rtol=2e-6, atol=1e-7)


@pytest.fixture(autouse=True)
def no_stray_warnings():
    """A warning a test does not expect with pytest.warns fails it."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        yield


def test_exports():
    assert fused_losses.weights is weights
    for name in ("label_counts", "pos_weight_from_counts", "multilabel_sample_weights",
                 "prior_bias"):
        assert getattr(fused_losses, name) is getattr(weights, name)
        assert name in fused_losses.__all__


def test_docstring_examples_run():
    result = doctest.testmod(weights, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 5 and result.failed == 0


# ---- each method against hand-computed values: n = 1, 2, 4, 8 of N = 10 ----

@pytest.mark.parametrize("kwargs,expected", [
    (dict(method="neg_pos"), [9, 4, 1.5, 0.25]),
    (dict(method="neg_pos", smoothing="sqrt"), [3, 2, math.sqrt(1.5), 0.5]),
    (dict(method="neg_pos", smoothing="log"), [math.log(10), math.log(5), math.log(2.5),
                                                math.log(1.25)]),
    (dict(method="neg_pos", clip=(0.5, 5.0)), [5, 4, 1.5, 0.5]),
    (dict(method="neg_pos", clip=(None, 2.0)), [2, 2, 1.5, 0.25]),
    (dict(method="neg_pos", smoothing="log", clip=(0.0, 2.0)), [2, math.log(5),
                                                                math.log(2.5), math.log(1.25)]),
    # N / n = 10, 5, 2.5, 1.25, mean 4.6875
    (dict(method="inverse_frequency"), [10 / 4.6875, 5 / 4.6875, 2.5 / 4.6875,
                                        1.25 / 4.6875]),
    # sqrt(N / n) = √10, √5, √2.5, √1.25, normalised to mean 1
    (dict(method="inverse_frequency", smoothing="sqrt"),
     [4 * math.sqrt(v) / sum(map(math.sqrt, (10, 5, 2.5, 1.25))) for v in (10, 5, 2.5, 1.25)]),
    # β = ½: (1 − β)/(1 − β^n) = 1, 2/3, 8/15, 128/255, normalised to sum 4
    (dict(method="effective_number", beta=0.5),
     [4 * v / (1 + 2 / 3 + 8 / 15 + 128 / 255) for v in (1, 2 / 3, 8 / 15, 128 / 255)]),
    (dict(method="effective_number", beta=0.0), [1, 1, 1, 1]),
])
def test_pos_weight_hand_computed(kwargs, expected):
    close(pos_weight_from_counts(COUNTS, N, **kwargs), expected)


def test_effective_number_tends_to_inverse_frequency():
    counts = torch.tensor([3.0, 30.0, 300.0])
    inv = pos_weight_from_counts(counts, 1000, method="inverse_frequency")
    eff = pos_weight_from_counts(counts, 1000, method="effective_number", beta=1 - 1e-9)
    torch.testing.assert_close(eff, inv, rtol=1e-5, atol=0)


# ---- effective number: β from the data by default, a warning when β saturates ----

FORUM_COUNTS, FORUM_N = torch.tensor([19000, 65000, 38000, 105000]), 224000


def _effective_number_by_hand(counts, total, beta):
    """Cui et al. in float64 with plain powers: w_c ∝ (1 − β)/(1 − β^n_c), Σ w = C."""
    raw = [(1 - beta) / (1 - beta ** int(c)) for c in counts]
    return [len(raw) * r / sum(raw) for r in raw]


def test_effective_number_default_beta_is_from_the_data():
    w = pos_weight_from_counts(FORUM_COUNTS, FORUM_N, method="effective_number")
    assert len(set(w.tolist())) == 4, w  # β = 0.999 gave [1, 1, 1, 1]
    # ordered inversely to the counts: the rarest class weighs most
    assert torch.equal(w.argsort(), FORUM_COUNTS.argsort(descending=True)), w
    assert w.min() < 0.5 and w.max() > 1.9, w
    close(w, _effective_number_by_hand(FORUM_COUNTS, FORUM_N, (FORUM_N - 1) / FORUM_N))
    close(pos_weight_from_counts(FORUM_COUNTS, FORUM_N, method="effective_number", beta=None),
          w.double())
    # explicit β that does not saturate: the same formula
    close(pos_weight_from_counts(COUNTS, N, method="effective_number", beta=0.9),
          _effective_number_by_hand(COUNTS, N, 0.9))
    # N = 1: β = 0, equal weights
    close(pos_weight_from_counts(torch.tensor([1, 1, 0.5]), 1, method="effective_number"),
          [1, 1, 1])


def test_effective_number_warns_when_explicit_beta_saturates():
    with pytest.warns(RuntimeWarning, match=r"beta=0.999 saturates.*beta=None"):
        w = pos_weight_from_counts(FORUM_COUNTS, FORUM_N, method="effective_number",
                                   beta=0.999)
    close(w, [1, 1, 1, 1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pos_weight_from_counts(FORUM_COUNTS, FORUM_N, method="effective_number")
        pos_weight_from_counts(COUNTS, N, method="effective_number", beta=0.5)  # 1 of 4 far
        pos_weight_from_counts(COUNTS, N, method="effective_number", beta=0.0)  # asked for
        pos_weight_from_counts(FORUM_COUNTS, FORUM_N, beta=0.999)  # neg_pos ignores β
    assert not caught, [str(w.message) for w in caught]


def test_inputs_accepted_as_any_real_counts():
    expected = pos_weight_from_counts(COUNTS, N)
    close(pos_weight_from_counts(COUNTS.double(), torch.tensor(N)), expected)
    close(pos_weight_from_counts(COUNTS.float(), 10.0), expected)


# ---- classes with no positives, or only positives ----

def test_zero_positive_class_gets_largest_weight_with_warning():
    with pytest.warns(RuntimeWarning, match=r"classes \[0\] .*no positive"):
        w = pos_weight_from_counts(torch.tensor([0, 2, 5]), 10)
    close(w, [4, 4, 1])
    with pytest.warns(RuntimeWarning, match=r"\[0, 2\]"):
        w = pos_weight_from_counts(torch.tensor([0, 2, 0, 5]), 10, method="inverse_frequency")
    close(w, [20 / 17, 20 / 17, 20 / 17, 8 / 17])  # 5, 5, 5, 2 normalised to mean 1
    with pytest.warns(RuntimeWarning, match=r"clip\[1\]"):
        w = pos_weight_from_counts(torch.tensor([0, 2, 5]), 10, clip=(0.5, 3.0))
    close(w, [3, 3, 1])


@pytest.mark.parametrize("method", weights.METHODS)
@pytest.mark.parametrize("smoothing", weights.SMOOTHINGS)
def test_degenerate_counts_stay_finite(method, smoothing):
    counts = torch.tensor([0.0, 1.0, 7.0, 1e6, 1e6])  # no positives ... all positive
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        w = pos_weight_from_counts(counts, 1e6, method=method, smoothing=smoothing)
        alone = pos_weight_from_counts(torch.zeros(3), 5, method=method, smoothing=smoothing)
    assert w.dtype == torch.float32 and torch.isfinite(w).all() and (w >= 0).all()
    assert w[0] == w[1:].max()  # the zero-positive class gets the largest weight
    close(alone, [1, 1, 1])     # nothing to compare with: neutral weights


def test_all_positive_class():
    with pytest.warns(RuntimeWarning, match=r"classes \[0\] .*every sample"):
        w = pos_weight_from_counts(torch.tensor([10, 5]), 10)
    close(w, [0, 1])
    close(pos_weight_from_counts(torch.tensor([10, 5]), 10, method="inverse_frequency"),
          [2 / 3, 4 / 3])


def test_prior_bias_values_and_degenerate_classes():
    close(prior_bias(torch.tensor([1, 3, 2]), 4), [math.log(1 / 3), math.log(3), 0.0])
    with pytest.warns(RuntimeWarning, match=r"classes \[0, 2\]"):
        b = prior_bias(torch.tensor([0, 1, 10]), 10)
    close(b, [math.log(0.5 / 9.5), math.log(1 / 9), math.log(9.5 / 0.5)])
    assert b[0] < b[1]  # never seen ranks below seen once
    model = torch.nn.Linear(4, 3)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        model.bias.copy_(prior_bias(torch.tensor([0, 1, 10]), 10))
    assert torch.isfinite(model.bias).all()


# ---- label_counts (streaming and progress bars: tests/test_counts.py) ----

def _labels(n=103, c=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, generator=gen) < torch.linspace(0.02, 0.6, c)


# ---- sampler weights ----

def test_sample_weights_hand_computed():
    y = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1], [0, 0, 0]])
    w = torch.tensor([1.0, 2.0, 6.0])
    close(multilabel_sample_weights(y, pos_weight=w, mode="max"), [1, 2, 6, 1])
    close(multilabel_sample_weights(y, pos_weight=w, mode="mean"), [1, 1.5, 3, 1])
    close(multilabel_sample_weights(y, pos_weight=w, mode="sum"), [1, 3, 9, 1])
    # default: inverse frequency N / n_c = 4/3, 2, 4; an absent class plays no part
    y = torch.cat([y, torch.zeros(4, 1, dtype=y.dtype)], dim=1)
    close(multilabel_sample_weights(y, mode="max"), [4 / 3, 2, 4, 4 / 3])


def test_weighted_sampler_raises_rare_label_frequency():
    n, draws = 4000, 20000
    y = torch.zeros(n, 3, dtype=torch.bool)
    y[: n // 2, 0] = True                      # 50 %
    y[::20, 1] = True                          # 5 %
    y[1::100, 2] = True                        # 1 %, partly with label 0
    w = multilabel_sample_weights(y)
    sampler = WeightedRandomSampler(w, draws, replacement=True,
                                    generator=torch.Generator().manual_seed(0))
    drawn = y[torch.tensor(list(sampler))].double().mean(0)
    uniform = y.double().mean(0)
    expected = (w.double().unsqueeze(1) * y).sum(0) / w.double().sum()
    sigma = (expected * (1 - expected) / draws).sqrt()
    assert ((drawn - expected).abs() < 5 * sigma).all(), (drawn, expected)
    # rarer labels gain more; the rarest far beyond uniform sampling's binomial spread
    assert drawn[2] > drawn[1] > uniform[1] and drawn[0] < uniform[0]
    assert drawn[2] > uniform[2] + 5 * math.sqrt(uniform[2] * (1 - uniform[2]) / draws)
    assert drawn[2] > 10 * uniform[2]


# ---- bad input ----

Y = _labels()


@pytest.mark.parametrize("call,exc,words", [
    (lambda: pos_weight_from_counts(torch.tensor([3, -1]), 10), ValueError,
     ["pos_counts", ">= 0", "[1]"]),
    (lambda: pos_weight_from_counts(torch.tensor([3, 12]), 10), ValueError,
     ["num_samples (10)", "12"]),
    (lambda: pos_weight_from_counts(COUNTS, N, method="balanced"), ValueError,
     ["method", "'balanced'"]),
    (lambda: pos_weight_from_counts(COUNTS, 0), ValueError, ["num_samples", "> 0"]),
    (lambda: pos_weight_from_counts(COUNTS, float("inf")), ValueError, ["num_samples"]),
    (lambda: pos_weight_from_counts(torch.tensor([1.0, float("nan")]), 10), ValueError,
     ["pos_counts", "finite"]),
    (lambda: pos_weight_from_counts([1, 2], 10), TypeError, ["pos_counts", "list"]),
    (lambda: pos_weight_from_counts(torch.tensor([True]), 10), TypeError,
     ["pos_counts", "bool"]),
    (lambda: pos_weight_from_counts(torch.ones(2, 2), 10), ValueError,
     ["pos_counts", "1-D", "(2, 2)"]),
    (lambda: pos_weight_from_counts(torch.ones(0), 10), ValueError, ["pos_counts"]),
    (lambda: pos_weight_from_counts(COUNTS, "10"), TypeError, ["num_samples", "str"]),
    (lambda: pos_weight_from_counts(COUNTS, torch.ones(2)), TypeError, ["num_samples"]),
    (lambda: pos_weight_from_counts(COUNTS, N, beta=1.0), ValueError, ["beta", "1.0"]),
    (lambda: pos_weight_from_counts(COUNTS, N, beta=-0.1), ValueError, ["beta"]),
    (lambda: pos_weight_from_counts(COUNTS, N, beta="0.9"), TypeError, ["beta", "str"]),
    (lambda: pos_weight_from_counts(COUNTS, N, smoothing="cbrt"), ValueError,
     ["smoothing", "'cbrt'"]),
    (lambda: pos_weight_from_counts(COUNTS, N, clip=(5, 1)), ValueError, ["clip", "lo <= hi"]),
    (lambda: pos_weight_from_counts(COUNTS, N, clip=(-1, 1)), ValueError, ["clip[0]"]),
    (lambda: pos_weight_from_counts(COUNTS, N, clip=(0, float("inf"))), ValueError,
     ["clip[1]"]),
    (lambda: pos_weight_from_counts(COUNTS, N, clip=(0, 0)), ValueError, ["clip[1]"]),
    (lambda: pos_weight_from_counts(COUNTS, N, clip=5.0), TypeError, ["clip", "(lo, hi)"]),
    (lambda: pos_weight_from_counts(COUNTS, N, clip=(1, "2")), TypeError, ["clip[1]"]),
    (lambda: prior_bias(torch.tensor([3, -1]), 10), ValueError, ["pos_counts", ">= 0"]),
    (lambda: prior_bias(torch.tensor([3, 11]), 10), ValueError, ["num_samples (10)"]),
    (lambda: label_counts(torch.ones(5)), ValueError, ["2-D", "(5,)", "one_hot"]),
    (lambda: label_counts(torch.ones(2, 3, 4)), ValueError, ["2-D", "(2, 3, 4)"]),
    (lambda: label_counts(torch.full((2, 3), 2)), ValueError, ["0 and 1", "2"]),
    (lambda: label_counts(torch.full((2, 3), 0.5)), ValueError, ["0 and 1", "0.5"]),
    (lambda: label_counts(Y, num_classes=6), ValueError, ["7 classes", "num_classes"]),
    (lambda: label_counts(Y, num_classes=0), ValueError, ["num_classes"]),
    (lambda: label_counts(Y, num_classes=7.0), TypeError, ["num_classes", "float"]),
    (lambda: label_counts([Y[:5], Y[:5, :3]]), ValueError, ["batch 1", "3 classes", "7"]),
    (lambda: label_counts([Y[:5], torch.ones(5)]), ValueError, ["batch 1", "2-D"]),
    (lambda: label_counts([(Y[:5],)]), TypeError, ["batch 0", "length 1"]),
    (lambda: label_counts(Y.numpy()), TypeError, ["labels_or_loader"]),
    (lambda: label_counts(3), TypeError, ["labels_or_loader", "int"]),
    (lambda: label_counts(Y, progress="yes"), TypeError, ["progress", "bool"]),
    (lambda: label_counts(torch.ones(2, 2, dtype=torch.complex64)), TypeError, ["complex"]),
    (lambda: multilabel_sample_weights(torch.ones(4)), ValueError, ["labels", "2-D"]),
    (lambda: multilabel_sample_weights(Y.tolist()), TypeError, ["labels", "list"]),
    (lambda: multilabel_sample_weights(Y, mode="min"), ValueError, ["mode", "'min'"]),
    (lambda: multilabel_sample_weights(Y, pos_weight=torch.ones(6)), ValueError,
     ["pos_weight", "(7,)", "(6,)"]),
    (lambda: multilabel_sample_weights(Y, pos_weight=-torch.ones(7)), ValueError,
     ["pos_weight", ">= 0"]),
    (lambda: multilabel_sample_weights(Y, pos_weight=torch.full((7,), math.inf)), ValueError,
     ["pos_weight", "finite"]),
    (lambda: multilabel_sample_weights(Y, pos_weight=torch.ones(7, dtype=torch.bool)),
     TypeError, ["pos_weight", "bool"]),
    (lambda: multilabel_sample_weights(Y, pos_weight=[1.0] * 7), TypeError,
     ["pos_weight", "list"]),
])
def test_bad_input_raises_clearly(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    for word in words:
        assert word in str(info.value), (word, str(info.value))


# ---- the worked example, on a tiny configuration ----

def _load_example():
    path = ROOT / "examples" / "imbalanced_multilabel.py"
    spec = importlib.util.spec_from_file_location("imbalanced_multilabel", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_example_runs_on_a_tiny_configuration(tmp_path, capsys):
    example = _load_example()
    threads = torch.get_num_threads()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            assert example.main(["--quick", "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    text = (tmp_path / "results.md").read_text()
    names = example.variants(torch.tensor([5.0, 1.0]), 10)
    assert ("ASL" in names) == hasattr(fused_losses, "asymmetric_loss")
    for name in names:
        assert f"| {name} |" in text, name
    assert "not available" in text or "ASL: included" in text
    printed = capsys.readouterr().out
    assert (tmp_path / "results.png").exists() or "skipping the PNG" in printed


def test_example_threshold_tuning_is_exact():
    example = _load_example()
    prob = torch.tensor([[0.9, 0.2], [0.8, 0.1], [0.3, 0.7], [0.1, 0.05]])
    y = torch.tensor([[1, 0], [1, 0], [0, 0], [1, 0]], dtype=torch.bool)
    thr = example.tune_thresholds(prob, y)
    # class 0: best F1 is keeping all four (6/7 vs 4/5 for the top two), so the
    # threshold sits below 0.1; class 1 has no positives: 0.5
    assert thr[0] < 0.1 and thr[1] == 0.5
    s = example.scores(prob, y, thr)
    assert s["recall"].tolist() == [1.0, 0.0]
    assert abs(s["macro_f1"] - 3 / 7) < 1e-6
