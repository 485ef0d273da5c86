"""Every public docstring example runs as pasted: the functional forms and
modules (generated from the specs), the package docstring and the helpers."""
import doctest

import pytest

import fused_losses
from fused_losses import functional, nn

PUBLIC = sorted(set(functional.__all__) | set(nn.__all__) | {"available_backends"})


@pytest.mark.parametrize("name", PUBLIC)
def test_docstring_example_runs(name):
    obj = getattr(fused_losses, name)
    tests = doctest.DocTestFinder(recurse=False).find(obj, name, globs={})
    examples = [t for t in tests if t.examples]
    assert examples, f"{name} has no example in its docstring"
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    for test in examples:
        runner.run(test)
    assert runner.failures == 0, f"{name}: {runner.failures} docstring example(s) failed"


def test_package_docstring_runs():
    result = doctest.testmod(fused_losses, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
