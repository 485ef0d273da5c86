"""Peak CPU memory of a call, from the profiler's allocation timeline.

Every allocation and free of torch's CPU allocator during ``fn()`` is replayed
in order; the result is the highest total of bytes allocated and not yet
freed. Unlike the process's resident-set high-water mark, a temporary cannot
hide in heap memory that glibc reuses. Used by ``bench.run`` on CPUs and by
``tests/test_integration.py``. (``torch.profiler._memory_profiler`` is a
private module: if a torch release moves it, both fail loudly.)
"""
from __future__ import annotations

from torch.profiler import ProfilerActivity, profile
from torch.profiler._memory_profiler import Action


def cpu_peak_extra_bytes(fn) -> int:
    """Peak bytes of CPU tensors allocated during ``fn()`` beyond those alive before it."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                 with_stack=True) as prof:
        fn()
    live = peak = 0
    for _, action, _, size in prof._memory_profile().timeline:
        if action == Action.CREATE:
            live += size
        elif action == Action.DESTROY:
            live -= size
        peak = max(peak, live)
    return peak
