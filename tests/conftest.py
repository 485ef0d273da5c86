"""Test set-up: without a GPU, Triton kernels run through the interpreter.

TRITON_INTERPRET must be set before ``fused_losses`` (and its @triton.jit
kernels) is imported, so it is set here, before any test module loads.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
