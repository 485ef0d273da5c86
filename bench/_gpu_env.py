"""What `make gpu-check` runs on: versions, backends, the GPU and its tools
(``python -m bench._gpu_env``; prints NO CUDA DEVICE where there is none)."""
from __future__ import annotations

import subprocess
import sys

import torch

import fused_losses
from fused_losses._backend import _EXT_HAS_CUDA, _EXT_PROBLEM

TOOLS = (["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.total",
          "--format=csv"], ["nvcc", "--version"], ["ncu", "--version"])


def main() -> int:
    print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA",
          torch.version.cuda)
    try:
        import triton
        print("triton", triton.__version__)
    except ImportError as exc:
        print("triton: not importable:", exc)
    print("device:", torch.cuda.get_device_name() if torch.cuda.is_available()
          else "NO CUDA DEVICE")
    print("backends on cuda:", fused_losses.available_backends("cuda"), "| C++ CUDA kernels:",
          _EXT_HAS_CUDA, "|", _EXT_PROBLEM or "extension imported")
    for cmd in TOOLS:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=3)
            print((out.stdout or out.stderr).strip().splitlines()[-3:])
        except (OSError, subprocess.SubprocessError) as exc:
            print(cmd[0], "unavailable:", exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
