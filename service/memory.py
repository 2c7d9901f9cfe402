"""Memory of this process during training: how much it holds, and glibc's hold on what it frees.

glibc keeps freed heap pages and serves large blocks from mappings it makes above a threshold it
raises as blocks are freed; on a long training run both decide how much resident memory a step
leaves behind. Training reads the resident size after every step and its peak
(`ragft.service.finetune`), hands freed memory back between steps, and sets the mapping threshold for
the run. Where glibc (or /proc) is missing, each function does nothing or falls back.

Example:
    >>> rss_mib() > 0
    True
"""

from __future__ import annotations

import contextlib
import ctypes
import resource


def rss_mib(field: str = "VmRSS") -> float:
    """Resident memory of this process now (VmRSS), or its peak since the last `reset_peak_rss` (VmHWM), in MiB;
    where /proc is missing, the process's lifetime peak (getrusage)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> None:
    """Start a new peak (VmHWM) so a training run's peak is its own, not that of what the process did before."""
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as refs:  # not Linux: the process's
        refs.write("5")


M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


@contextlib.contextmanager
def tensors_returned_on_free(threshold_bytes: int):
    """During training, glibc serves every allocation above `threshold_bytes` from its own mapping, handed back
    the moment it is freed, instead of raising its threshold up to 32 MiB as large blocks are freed. The number
    trades peak memory for kernel time: a mapping is zero-filled page by page each time it is made again, so at
    256 KiB every activation was (1.3 GB of page faults per step, a third of training's CPU time in the kernel,
    89 tokens/s), while at 4 MiB a 512-token pass's hidden states and MLP activations (1-3 MiB each for
    SmolLM2-135M) come from the heap and only attention scores and LM-head chunks are mapped (117 tokens/s, peak
    +0.6 GiB from the heap's fragmentation; `lora.mmap_threshold_kib`, bench/bench_train.py --memory).
    Afterwards the threshold is 32 MiB, where glibc's own would have settled."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, threshold_bytes)
    except (OSError, AttributeError):  # not glibc
        yield
        return
    try:
        yield
    finally:
        libc.mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024)


def release_freed_memory() -> None:
    """Hand memory freed by the last step back to the system (glibc keeps freed heap pages otherwise, so the
    resident size between steps showed the largest step so far: 3.7 GB at rest, 1.0 GB after a trim)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)
