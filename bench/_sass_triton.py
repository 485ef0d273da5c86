"""Triton half of ``make sass-check``: the hot kernels' cases and their compile."""
from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

from .sass_check import SHAPE, Row, count, parse_ptxas, sass_of


def _triton_cases():
    """[(name, kernel, args, constexprs, num_warps, budgeted, variant)] at SHAPE,
    built by the launchers' own ``_launch_args`` on meta tensors."""
    import torch
    from fused_losses.spec.asl import SPEC as ASL
    from fused_losses.spec.focal_bce import SPEC as FOCAL
    from fused_losses.triton import _scale, asl, focal_bce
    from fused_losses.triton._launch import forward_plan

    R, C = SHAPE
    meta = dict(device="meta")
    x = torch.empty(R, C, **meta)
    t = torch.empty(R, C, dtype=torch.bool, **meta)
    pw = torch.empty(C, **meta)

    def options(spec, **over):
        values = {o.name: o.default for o in spec.kernel_options}
        values.update(over)
        return spec.encode(values)

    def forward(pointers, sizes, flags, divisor="numel", x=x):
        # Exactly the launch of _launch.elementwise_forward, reduction="mean" with a gradient.
        *_, args, constexprs, _, _ = forward_plan(x, pointers, sizes, flags, "mean", True,
                                                  divisor)
        constexprs = dict(constexprs)
        nw = constexprs.pop("num_warps")
        return list(args), constexprs, nw

    cases = []
    p, s, f, _ = focal_bce._launch_args(x, t, None, pw, None,
                                        options(FOCAL, gamma=2.0, alpha=0.25))
    cases.append(("focal_bce_fwd", focal_bce._focal_bce_kernel, *forward(p, s, f), True,
                  "fp32 x, bool t, pos_weight[C], alpha=0.25, gamma=2, mean+grad"))
    p, s, f = asl._launch_args(x, t, None, pw, options(ASL))
    cases.append(("asl_fwd", asl._asl_kernel, *forward(p, s, f), True,
                  "fp32 x, bool t, pos_weight[C], defaults (g+1 g-4 clip .05), mean+grad"))
    # Unbudgeted variants: float 0/1 targets (a per-tile hard test, both paths in
    # the loop body: a static count of both), bf16 logits with bool targets.
    tf = torch.empty(R, C, **meta)
    xb = torch.empty(R, C, dtype=torch.bfloat16, **meta)
    p, s, f, _ = focal_bce._launch_args(x, tf, None, pw, None,
                                        options(FOCAL, gamma=2.0, alpha=0.25))
    cases.append(("focal_bce float_t fwd", focal_bce._focal_bce_kernel, *forward(p, s, f), False,
                  "fp32 x, fp32 t (hard and soft paths), pos_weight[C], alpha=.25, gamma=2"))
    p, s, f, _ = focal_bce._launch_args(xb, t, None, pw, None,
                                        options(FOCAL, gamma=2.0, alpha=0.25))
    cases.append(("focal_bce bf16 fwd", focal_bce._focal_bce_kernel, *forward(p, s, f, x=xb),
                  False, "bf16 x, bool t, pos_weight[C], alpha=0.25, gamma=2, mean+grad"))
    p, s, f = asl._launch_args(x, tf, None, pw, options(ASL))
    cases.append(("asl float_t fwd", asl._asl_kernel, *forward(p, s, f), False,
                  "fp32 x, fp32 t (hard and soft paths), pos_weight[C], defaults"))
    cases += _ghmc_dice_cases(x, t, options, forward)
    cases += _rows_cases(options)
    one = torch.empty((), **meta)
    cases.append(("scale_grad", _scale._scale_grad_kernel, [x, one, one, x.numel()],
                  dict(BLOCK=_scale.BLOCK), _scale.NUM_WARPS, False,
                  "fp32 grad, fp32 grad_output and scale"))
    return cases


def _ghmc_dice_cases(x, t, options, forward):
    """GHM-C's two passes and dice's two (unbudgeted, issue #13): fp32 x, bool t,
    built by the launchers' own plans."""
    import torch
    from fused_losses.spec.dice import SPEC as DICE
    from fused_losses.spec.ghmc import SPEC as GHMC
    from fused_losses.triton import dice, ghmc

    cases = []
    o = options(GHMC)
    _, _, args, ce = ghmc.hist_plan(x, t, None, o)
    ce = dict(ce)
    nw = ce.pop("num_warps")
    cases.append(("ghmc_hist", ghmc._ghmc_hist_kernel, list(args), ce, nw, False,
                  "fp32 x, bool t, bins=10 (2 packed count words), no label_weight"))
    w = torch.empty(10, dtype=torch.float32, device="meta")
    p, s, f = ghmc._launch_args(x, t, None, w)
    cases.append(("ghmc_fwd", ghmc._ghmc_kernel, *forward(p, s + ghmc._bins(o), f, None), False,
                  "fp32 x, bool t, bins=10, no label_weight, mean+grad"))
    o = options(DICE)
    _, _, args, ce = dice.sums_plan(x, t, o)
    cases.append(("dice_sums", dice._dice_fwd_kernel, list(args), _tile(ce), ce["num_warps"],
                  False, "fp32 x, bool t, defaults (alpha 0, k 1), column sums"))
    sums = torch.empty(3, x.shape[1], device="meta")
    _, _, args, ce = dice.grad_plan(torch.empty((), device="meta"), x, t, sums, o, "mean")
    cases.append(("dice_grad", dice._dice_bwd_kernel, list(args), _tile(ce), ce["num_warps"],
                  False, "fp32 x, bool t, defaults (alpha 0, k 1), mean"))
    return cases


ROWS_SHAPE = (65536, 270)


def _rows_cases(options):
    """The row kernels of softmax focal and DSC for C <= TILE_MAX_C (unbudgeted,
    issue #14) at ROWS_SHAPE, fp32 logits, int64 targets, mean with the
    gradient, built by the launchers' own ``_launch_args`` and ``rows_plan``.
    Per element is per lane of the [ROWS, BLOCK_C] tile: at C = 270 in a
    512-wide row 270/512 lanes are real, so per real element is x512/270."""
    import torch
    from fused_losses.spec.dsc import SPEC as DSC
    from fused_losses.spec.softmax_focal import SPEC as SF
    from fused_losses.triton import _softmax, dsc, softmax_focal
    from fused_losses.triton._launch import rows_plan

    R, C = ROWS_SHAPE
    meta = dict(device="meta")
    x = torch.empty(R, C, **meta)
    y = torch.empty(R, dtype=torch.int64, **meta)
    alpha = torch.empty(C, **meta)
    den = torch.empty(2, **meta)
    real = f"per real element x{512 / C:.2f} (C={C} of BLOCK_C 512)"
    cases = []
    for name, a, variant in [
            ("softmax_focal_rows_fwd", None, "no alpha"),
            ("softmax_focal_rows alpha fwd", alpha, "alpha[C]")]:
        kernel, rows, p, s, f = softmax_focal._launch_args(x, y, a, options(SF, gamma=2.0))
        *_, args, ce = rows_plan(x, y, rows, p, s, f, "mean", True, den)
        cases.append((name, kernel, list(args), _tile(ce), ce["num_warps"], False,
                      f"fp32 x, int64 y, {variant}, gamma=2, ignore_index, mean+grad "
                      f"(divisor from the pre-pass); {real}"))
    kernel, rows, p, s, f = dsc._launch_args(x, y, options(DSC))
    *_, args, ce = rows_plan(x, y, rows, p, s, f, "mean", True)
    cases.append(("dsc_rows_fwd", kernel, list(args), _tile(ce), ce["num_warps"], False,
                  f"fp32 x, int64 y, defaults (alpha 1, smooth 1), mean+grad; {real}"))
    cases.append(("softmax_rows_weights", _softmax._row_weight_sum_kernel,
                  [y, alpha, den, R, C, -100], dict(HAS_A=True, HAS_IGNORE=True,
                                                    BLOCK=_softmax.WEIGHT_BLOCK), 8, False,
                  "the mean's divisor pre-pass: int64 y, alpha[C]; per target, not per "
                  "logit"))
    return cases


def _tile(constexprs):
    """The kernel's constexprs plus TILE_ELEMS = BLOCK_R·BLOCK_C (a 2-D loop tile:
    ``compile_triton`` divides by its elements per thread); num_warps out."""
    ce = {k: v for k, v in constexprs.items() if k != "num_warps"}
    rows = ce.get("BLOCK_R", ce.get("ROWS"))
    return dict(ce, TILE_ELEMS=rows * ce["BLOCK_C"])


def compile_triton(name, kernel, args, constexprs, num_warps, budgeted, variant, tmp: Path):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import get_ptxas
    from triton.compiler import ASTSource
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import native_specialize_impl

    target = GPUTarget("cuda", 90, 32)
    backend = make_backend(target)
    constexprs = dict(constexprs)
    tile_elems = constexprs.pop("TILE_ELEMS", None)  # a 2-D tile: not a kernel parameter
    bound = dict(zip(kernel.arg_names, args))
    bound.update(constexprs)
    signature, consts, attrs = {}, {}, {}
    for i, param in enumerate(kernel.params):
        value = bound[param.name]
        if param.is_constexpr:
            signature[param.name], consts[(i,)] = "constexpr", value
            continue
        # What the JIT launcher does: int 1 -> constexpr, 16-divisible -> tt.divisibility.
        ty, spec = native_specialize_impl(type(backend), value, False, True, True)
        signature[param.name] = ty
        if ty == "constexpr":
            consts[(i,)] = spec
        elif isinstance(spec, str):
            attrs[(i,)] = backend.parse_attr(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = triton.compile(ASTSource(kernel, signature, consts, attrs), target=target,
                                  options={"num_warps": num_warps})
    cubin = tmp / f"triton_{name}.cubin"
    cubin.write_bytes(compiled.asm["cubin"])
    funcs = sass_of(cubin)
    total = sum(count(v)[0] for v in funcs.values())
    loop = max((n for n in (count(v)[1] for v in funcs.values()) if n is not None), default=None)
    # Registers and spills: ptxas -v on the same PTX (the metadata's n_regs and
    # n_spills are only filled in when a driver loads the binary).
    ptx = tmp / f"triton_{name}.ptx"
    ptx.write_text(compiled.asm["ptx"])
    arch = f"sm_{target.arch}a" if target.arch >= 90 else f"sm_{target.arch}"
    res = subprocess.run([get_ptxas(target.arch).path, "-v", f"--gpu-name={arch}", str(ptx),
                          "-o", str(tmp / f"triton_{name}.check.cubin")],
                         capture_output=True, text=True, timeout=300)
    regs, spills = parse_ptxas(res.stdout + res.stderr).get(compiled.metadata.name, (None, None))
    block = constexprs.get("BLOCK") or tile_elems
    per_thread = block / (32 * num_warps) if block else None
    # A persistent kernel loops over BLOCK tiles: its loop body is one tile's
    # work; otherwise the whole kernel (prologue and epilogue too) is one tile.
    body, what = (loop, f"largest loop body ({loop})") if loop else (total, "whole kernel")
    per_elem = body / per_thread if per_thread else None
    method = (f"{what} / {per_thread:g} elements per thread ("
              f"{'BLOCK' if 'BLOCK' in constexprs else 'BLOCK_R*BLOCK_C'} {block}, "
              f"{num_warps} warps)" if per_thread else what)
    return Row(name, "triton", variant, total, per_elem, method, regs, spills, budgeted)


