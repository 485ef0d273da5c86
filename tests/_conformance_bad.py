"""Bad input generated from a spec: for each Option, values outside its type
and range; for each Operand, tensors its kind refuses; and calls that break
the spec's target kind and input dims (tests/test_conformance_api.py)."""
from __future__ import annotations

import math

import torch

from _conformance import Tensor, class_count, module_state


def bad_option_values(opt) -> list:
    """(value, exception) pairs the option must refuse, from its type and range."""
    if opt.type is object:
        return []
    out = [("1", TypeError)]
    if not opt.optional:
        out.append((None, TypeError))
    if opt.type is bool:
        return out + [(1, TypeError)]
    out.append((True, TypeError))
    if opt.type is int:
        out.append((2.5, TypeError))
        if opt.low is not None:
            out += [(int(opt.low) - 1, ValueError), (int(opt.high) + 1, ValueError)]
        return out
    out += [(math.nan, ValueError), (opt.low - 0.5, ValueError)]
    out.append((opt.high if opt.high_open else opt.high + 0.5, ValueError))  # inf for [low, inf)
    if opt.tensor:
        out += [(Tensor("wrong"), ValueError), (Tensor("last", torch.int64), TypeError)]
    return out


def bad_operand_values(spec, p, x, t) -> list:
    """(value, exception, words) for one tensor operand of a call on ``x``/``t``."""
    if p.kind == "state":
        ref = module_state(spec, {o.name: o.default for o in spec.options})[p.name]
        return [([0.0], TypeError, [p.name]),
                (torch.zeros(ref.numel() + 1, dtype=ref.dtype), ValueError, [p.name]),
                (torch.zeros_like(ref, dtype=torch.float64), ValueError, [p.name])]
    c = class_count(x.shape) if p.kind == "class_weight" else t.shape[-1]
    out = [(0.5, TypeError, [p.name]), ([1.0] * c, TypeError, [p.name]),
           (torch.ones(c + 1), ValueError, [p.name, f"({c + 1},)"]),
           (torch.ones(c, device="meta"), ValueError, [p.name, "device"])]
    if p.kind == "class_weight":
        out.append((torch.ones(c, 1), ValueError, [p.name]))
    else:
        out.append((torch.ones(2, *t.shape), ValueError, [p.name]))
    if p.floating:
        out.append((torch.ones(c, dtype=torch.int64), TypeError, [p.name, "int64"]))
    return out


def bad_calls(spec, x, t) -> dict:
    """id -> (x, t, kwargs, exception, words): calls the functional form refuses."""
    index = spec.targets == "index"
    out = {
        "int-logits": (x.long(), t, {}, TypeError, ["input", "int64"]),
        "bool-logits": (x > 0, t, {}, TypeError, ["input", "bool"]),
        "ndarray-logits": (x.numpy(), t, {}, TypeError, ["input", "ndarray"]),
        "list-target": (x, t.tolist(), {}, TypeError, ["target", "list"]),
        "target-shape": (x, t[:-1], {}, ValueError, ["target shape"]),
        "target-on-meta": (x, t.to("meta"), {}, ValueError, ["device"]),
        "reduction": (x, t, {"reduction": "elementwise_mean"}, ValueError,
                      ["reduction", "'elementwise_mean'"]),
        "reduction-none-object": (x, t, {"reduction": None}, ValueError, ["reduction"]),
        "backend": (x, t, {"backend": "gpu"}, ValueError, ["backend", "'gpu'"]),
        "backend-not-str": (x, t, {"backend": 0}, ValueError, ["backend"]),
        "unknown-kwarg": (x, t, {"gama": 2.0}, TypeError, ["gama"]),
    }
    if index:
        out["float-target"] = (x, t.float(), {}, TypeError, ["target", "float32"])
        out["bool-target"] = (x, t > 0, {}, TypeError, ["target", "bool"])
        out["no-classes"] = (x[:, :0], t, {}, ValueError, ["input"])
    else:
        out["complex-target"] = (x, t.to(torch.complex64), {}, TypeError, ["target"])
        out["target-transposed"] = (x, t.transpose(0, -1), {}, ValueError, ["target shape"])
    if spec.input_dims == "class_dim":
        out["1d-input"] = (x[0], t[0], {}, ValueError, ["input", "[N, C"])
    if spec.input_dims == "class_dim" or index:
        out["0d-input"] = (x[0, 0], t[0, 0] if not index else t[0], {}, ValueError, ["input"])
    if spec.input_dims == "matrix":
        t3 = t[:, None].expand(-1, 2) if index else t[..., None].expand(*t.shape, 2)
        out["3d-input"] = (x[..., None].expand(*x.shape, 2), t3, {}, ValueError,
                           ["input", "[N, C]"])
    if spec.target_grad == "error" and not index:
        grad_t = t.detach().float().clone().requires_grad_()
        out["target-requires-grad"] = (x, grad_t, {}, ValueError, ["target.requires_grad"])
    return out
