"""Type information: annotations on every public callable, the checked-in stubs
(``fused_losses/*.pyi``, written by ``python -m fused_losses._stubs``), the
PEP 561 marker, and, when mypy is installed, what a static checker makes of
right and wrong calls."""
from __future__ import annotations

import ast
import difflib
import inspect
import os
import re
import tempfile

import pytest
import torch

import fused_losses
from fused_losses import _stubs

PACKAGE_DIR = os.path.dirname(os.path.abspath(fused_losses.__file__))
ROOT = os.path.dirname(PACKAGE_DIR)
_EMPTY = inspect.Parameter.empty
_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _own(cls: type, method: str):
    """``cls.<method>`` if the package defines it (generated or written), else None
    (inherited from torch or the builtins: not ours to annotate)."""
    for klass in cls.__mro__:
        if method in vars(klass):
            return getattr(cls, method) if klass.__module__.startswith("fused_losses") else None
    return None


def _callables():
    """(label, callable) for each public function, and each ``__init__``/``forward``
    the package defines for a public class."""
    out = []
    for name in fused_losses.__all__:
        obj = getattr(fused_losses, name)
        if isinstance(obj, type):
            out += [(f"{name}.{m}", _own(obj, m)) for m in ("__init__", "forward")
                    if _own(obj, m) is not None]
        elif callable(obj):
            out.append((name, obj))
    return out


CALLABLES = _callables()


@pytest.mark.parametrize("label,fn", CALLABLES, ids=[label for label, _ in CALLABLES])
def test_public_callables_are_fully_annotated(label, fn):
    sig = inspect.signature(fn, eval_str=True)
    bare = [p.name for i, p in enumerate(sig.parameters.values())
            if p.annotation is _EMPTY and p.kind not in _VARIADIC
            and not (i == 0 and p.name == "self")]
    problems = [f"parameters without a type hint: {bare}"] if bare else []
    if sig.return_annotation is _EMPTY:
        problems.append("no return annotation")
    assert not problems, f"{label}{sig}: " + "; ".join(problems)


def test_every_public_name_is_covered():
    covered = {label.split(".")[0] for label, _ in CALLABLES}
    others = {n for n in fused_losses.__all__ if n not in covered}
    # what is left is a module or a class that inherits every method it has
    assert all(inspect.ismodule(getattr(fused_losses, n)) or isinstance(getattr(fused_losses, n),
                                                                        type) for n in others)


def test_generated_annotations_follow_the_spec():
    sig = inspect.signature(fused_losses.focal_bce)
    hints = {n: p.annotation for n, p in sig.parameters.items()}
    assert hints["input"] is torch.Tensor and hints["target"] is torch.Tensor
    assert hints["gamma"] is float and hints["reduction"] is str and hints["backend"] is str
    assert set(getattr(hints["alpha"], "__args__", ())) == {float, torch.Tensor, type(None)}
    assert set(getattr(hints["pos_weight"], "__args__", ())) == {torch.Tensor, type(None)}
    assert set(getattr(hints["ignore_index"], "__args__", ())) == {int, type(None)}
    assert sig.return_annotation is torch.Tensor
    assert fused_losses.focal_bce.__annotations__["gamma"] is float
    init = inspect.signature(fused_losses.FocalBCE.__init__)
    assert init.return_annotation is None and init.parameters["gamma"].annotation is float
    assert fused_losses.FocalBCE.__init__.__annotations__["return"] is None


# -- stubs ------------------------------------------------------------------
@pytest.fixture(scope="module")
def generated():
    return _stubs.generate()


@pytest.mark.parametrize("name", ["functional.pyi", "nn.pyi", "__init__.pyi"])
def test_checked_in_stub_is_current(generated, name):
    path = os.path.join(PACKAGE_DIR, name)
    assert os.path.exists(path), f"{path} is missing: run `python -m fused_losses._stubs`"
    with open(path, encoding="utf-8") as f:
        current = f.read()
    diff = "".join(list(difflib.unified_diff(current.splitlines(True),
                                             generated[name].splitlines(True),
                                             "checked in", "generated now"))[:60])
    assert current == generated[name], (
        f"fused_losses/{name} is stale (a public signature changed): run "
        f"`python -m fused_losses._stubs` and commit the result.\n{diff}")


def _stub_tree(generated, name: str) -> ast.Module:
    return ast.parse(generated[name])


def test_stubs_declare_every_public_name(generated):
    functional = _stub_tree(generated, "functional.pyi")
    defs = {n.name for n in functional.body if isinstance(n, ast.FunctionDef)}
    assert set(fused_losses.functional.__all__) <= defs
    nn = _stub_tree(generated, "nn.pyi")
    classes = {n.name: n for n in nn.body if isinstance(n, ast.ClassDef)}
    assert set(fused_losses.nn.__all__) <= set(classes)
    for cls in classes.values():
        methods = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}
        assert {"__init__", "forward", "__call__"} <= methods, cls.name
    init = _stub_tree(generated, "__init__.pyi")
    bound = {a.asname or a.name for n in init.body if isinstance(n, ast.ImportFrom)
             for a in n.names}
    bound |= {n.target.id for n in init.body if isinstance(n, ast.AnnAssign)}
    assert set(fused_losses.__all__) <= bound


def test_stub_signatures_match_the_runtime(generated):
    functional = _stub_tree(generated, "functional.pyi")
    for node in functional.body:
        if isinstance(node, ast.FunctionDef):
            runtime = inspect.signature(getattr(fused_losses.functional, node.name))
            a = node.args
            names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
            assert names == list(runtime.parameters), node.name


def test_annotation_text():
    imports = _stubs._Imports()
    from typing import Any, Optional, Union
    assert _stubs.annotation_text(Optional[torch.Tensor], imports) == "torch.Tensor | None"
    assert _stubs.annotation_text(Union[float, torch.Tensor, None], imports) == \
        "float | torch.Tensor | None"
    assert _stubs.annotation_text(list[str], imports) == "list[str]"
    assert _stubs.annotation_text(Any, imports) == "Any"
    assert _stubs.annotation_text(torch.nn.Module, imports) == "torch.nn.Module"
    assert imports.lines() == ["from typing import Any", "import torch", "import torch.nn"]
    assert _stubs.default_text(float("inf")) == "..." and _stubs.default_text(-100) == "-100"


def test_py_typed_ships():
    assert os.path.isfile(os.path.join(PACKAGE_DIR, "py.typed"))
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        data = tomllib.load(f)["tool"]["setuptools"]["package-data"]["fused_losses"]
    assert "py.typed" in data and "*.pyi" in data


# -- a static checker's view ----------------------------------------------------
GOOD = """\
import torch
import fused_losses
from fused_losses import (BCEWithLogitsLoss, FocalBCE, GHMC, asymmetric_loss,
                          available_backends, binary_cross_entropy_with_logits,
                          check_class_targets, dice_loss, focal_bce, softmax_focal_loss)

x, y = torch.randn(4, 3), torch.rand(4, 3)
loss: torch.Tensor = focal_bce(x, y, gamma=2.0, alpha=0.25, reduction="sum")
loss = focal_bce(x, y, alpha=torch.full((3,), 0.25), pos_weight=torch.ones(3))
loss = FocalBCE(gamma=1, backend="torch")(x, y)
loss = asymmetric_loss(x, y, clip=0.1)
loss = binary_cross_entropy_with_logits(x, y, pos_weight=torch.ones(3))
loss = BCEWithLogitsLoss()(x, y)
loss = softmax_focal_loss(x, torch.tensor([0, 1, 2, 0]), ignore_index=None)
loss = fused_losses.functional.dice_loss(x, y)
loss = fused_losses.nn.GHMC(bins=5)(x, y)
backends: list[str] = available_backends("cpu")
gamma: float = FocalBCE().gamma
check_class_targets(torch.tensor([0, 2]), 3)
"""
BAD = """\
focal_bce(x, y, gamma="2")  # E: arg-type
focal_bce(x, y, nope=1)  # E: call-arg
FocalBCE(alpha="0.25")  # E: arg-type
asymmetric_loss(x)  # E: call-arg
wrong: int = dice_loss(x, y)  # E: assignment
GHMC(bins=2.5)  # E: arg-type
FocalBCE()(x, "y")  # E: arg-type
available_backends(3)  # E: arg-type
softmax_focal_loss(x, y, ignore_index="a")  # E: arg-type
"""


def test_the_well_typed_snippet_runs():
    exec(compile(GOOD, "<snippet>", "exec"), {})


def test_mypy_accepts_right_calls_and_reports_wrong_ones(tmp_path, monkeypatch):
    api = pytest.importorskip("mypy.api")
    snippet = tmp_path / "snippet.py"
    snippet.write_text(GOOD + BAD)
    monkeypatch.chdir(ROOT)  # mypy finds the package (and its stubs) from here
    cache = os.path.join(tempfile.gettempdir(), "fused_losses_mypy_cache")
    out, err, _ = api.run([str(snippet), "--follow-imports=silent", "--cache-dir", cache,
                           "--show-error-codes", "--no-error-summary"])
    found = {}
    for line in out.splitlines():
        m = re.match(r".*snippet\.py:(\d+): error: .*\[([\w-]+)\]$", line)
        if m:
            found.setdefault(int(m.group(1)), set()).add(m.group(2))
    expected = {}
    for i, line in enumerate((GOOD + BAD).splitlines(), 1):
        if "# E: " in line:
            expected[i] = {line.split("# E: ")[1].strip()}
    assert found == expected, f"mypy said:\n{out}{err}"
