"""The output protocols of the fused ops: fake kernels, autograd and the call.

Every fused op takes the spec's tensor operands (``spec.kernel_operands``, in
order, None when absent) and the scalar options as one ``list[float]``
bundle (``spec.encode``). The protocols:

- ``elementwise`` / ``rows``: ``fwd(input, target, *operands, options,
  reduction, compute_grad) -> (loss, grad, scale)`` and ``bwd(grad_output,
  input, target, *operands, options)``; ``none`` gives the input's shape
  (elementwise) or the target's (rows, one loss per class-index row).
- ``column_sums`` (dice): ``fwd(input, target, options, reduction) -> (loss,
  sums)`` and ``bwd(grad_output, input, target, sums, options, reduction)``.
- ``ghmc``: ``hist(input, target, label_weight, options)``, ``weights(hist,
  acc_sum, options, mean)``, then the elementwise protocol with operands
  ``(label_weight, weights)``.
"""
from __future__ import annotations

import torch

from .._layout import backward_fake, dice_outputs, fused_outputs, row_outputs
from ._fused import attach_autograd, needs_input_grad, register_fused_autograd


def _qualified(name: str) -> str:
    return f"fused_losses::{name}"


def _op(name: str):
    return getattr(torch.ops.fused_losses, name)


def _operands(spec, values):
    out = []
    for name in spec.kernel_operands:
        value = values[name]
        out.append(value if isinstance(value, torch.Tensor) else None)
    return out


def _elementwise_outputs(input, target, reduction, compute_grad):
    return fused_outputs(input, reduction, compute_grad)


class _Protocol:
    """A forward/backward op pair: registers the fakes, returns both names."""

    @staticmethod
    def op_names(prefix):
        return f"{prefix}_fwd", f"{prefix}_bwd"

    @classmethod
    def _pair(cls, prefix, fwd_fake):
        fwd, bwd = _Protocol.op_names(prefix)
        torch.library.register_fake(_qualified(fwd), fwd_fake)
        torch.library.register_fake(_qualified(bwd), backward_fake)
        return fwd, bwd


class Elementwise(_Protocol):
    """(loss, grad, scale) with the gradient written by the forward."""

    outputs = staticmethod(_elementwise_outputs)

    @classmethod
    def register(cls, spec, prefix):
        outputs = cls.outputs
        fwd, bwd = cls._pair(prefix, lambda input, target, *rest:
                             outputs(input, target, rest[-2], rest[-1]))
        call = register_fused_autograd(_qualified(fwd), _op(bwd),
                                       len(spec.kernel_operands))

        def run(input, target, values, reduction):
            loss, _, _ = call(input, target, *_operands(spec, values), spec.encode(values),
                              reduction, needs_input_grad(input))
            return loss
        return run


class Rows(Elementwise):
    """As elementwise; ``none`` gives one loss per row (the target's shape)."""

    outputs = staticmethod(row_outputs)


class ColumnSums(_Protocol):
    """(loss, sums): the gradient needs full-batch per-class sums, so the
    backward is its own pass over (input, target, sums)."""

    @classmethod
    def register(cls, spec, prefix):
        fwd, bwd = cls._pair(prefix, lambda input, target, options, reduction:
                             dice_outputs(input, reduction))
        bwd_op = _op(bwd)

        def setup_context(ctx, inputs, output):
            input, target, *scalars = inputs
            ctx.scalars = scalars
            ctx.mark_non_differentiable(output[1])
            ctx.set_materialize_grads(False)
            # References, not copies: the backward recomputes p̃ from x.
            ctx.save_for_backward(input, target, output[1])

        def backward(ctx, grad_loss, _grad_sums):
            if grad_loss is None:
                return (None,) * (2 + len(ctx.scalars))
            input, target, sums = ctx.saved_tensors
            grad_input = bwd_op(grad_loss, input, target, sums, *ctx.scalars)
            return (grad_input,) + (None,) * (1 + len(ctx.scalars))

        call = attach_autograd(_qualified(fwd), setup_context, backward)

        def run(input, target, values, reduction):
            # Contiguous here, outside the op: a strided input copied inside the
            # Triton op made inductor's scheduler fail (KeyError in
            # compute_ancestors, H100 run of the spatial compile test).
            loss, _ = call(input.contiguous(), target.contiguous(), spec.encode(values),
                           reduction)
            return loss
        return run


class Ghmc(_Protocol):
    """Histogram -> per-bin weights -> the elementwise loss; only the last is
    differentiable (the weights are constants of the step)."""

    @classmethod
    def register(cls, spec, prefix):
        fwd, bwd = cls._pair(prefix, lambda input, target, lw, w, options, reduction,
                             compute_grad: fused_outputs(input, reduction, compute_grad))
        hist, weights = f"{prefix}_hist", f"{prefix}_weights"
        torch.library.register_fake(
            _qualified(hist), lambda input, target, label_weight, options:
            input.new_empty(spec.decode(options).bins + 1, dtype=torch.int64))
        torch.library.register_fake(
            _qualified(weights), lambda hist, acc_sum, options, mean:
            hist.new_empty(hist.numel() - 1, dtype=torch.float32))
        call = register_fused_autograd(_qualified(fwd), _op(bwd), 2)
        hist_op, weights_op = _op(hist), _op(weights)

        def run(input, target, values, reduction):
            options = spec.encode(values)
            label_weight = values["label_weight"]
            counts = hist_op(input, target, label_weight, options)
            if values["process_group"] is not None:
                torch.distributed.all_reduce(counts, group=values["process_group"])
            acc_sum = values["acc_sum"] if values["momentum"] > 0 else None
            w = weights_op(counts, acc_sum, options, reduction == "mean")
            loss, _, _ = call(input, target, label_weight, w, options, reduction,
                              needs_input_grad(input))
            return loss
        return run


PROTOCOLS = {"elementwise": Elementwise, "rows": Rows, "column_sums": ColumnSums,
             "ghmc": Ghmc}
