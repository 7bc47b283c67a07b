"""Peak resident memory of this process over a window, above the memory it held when the window opened.

Training memory is what an edge device must have free to train: the peak resident set size (RSS) while
a client trains, minus the RSS just before it starts. Reading RSS from the kernel counts everything
(torch's allocator, autograd's saved activations, the optimiser, kornia's buffers) without trusting any
library's own accounting.

Two ways to find the peak, picked once per process:

- ``kernel``: writing ``5`` to ``/proc/self/clear_refs`` resets the kernel's high-water mark
  (``VmHWM`` in ``/proc/self/status``) to the current RSS (Linux 4.0 and later), so the peak over the
  window is read exactly and for free.
- ``sampling``: where that file cannot be written (other kernels, some sandboxes), a thread reads
  ``/proc/self/statm`` every few milliseconds and keeps the largest value. It can miss a peak shorter
  than the interval, so it reads low rather than high.

Memory that earlier work freed but the C allocator kept would sit in the baseline and then be reused,
hiding part of the next peak (measured here: a second identical ViT training run read 377 MiB instead of
1385 MiB). So opening a window first hands free heap memory back to the kernel (glibc's
``malloc_trim``); and each configuration still runs in a fresh process, so that nothing a different
configuration loaded or cached is counted, or left out.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from agent.errors import ConfigurationError

MeasurementMethod = Literal["kernel", "sampling"]

STATUS_PATH = Path("/proc/self/status")
STATM_PATH = Path("/proc/self/statm")
CLEAR_REFS_PATH = Path("/proc/self/clear_refs")
RESET_PEAK_VALUE = "5"
DEFAULT_SAMPLING_INTERVAL_SECONDS = 0.002
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, looked up once; None on other C libraries."""
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    trim: Callable[[int], int] | None = getattr(ctypes.CDLL(library), "malloc_trim", None)
    return trim


def release_free_memory() -> None:
    """Collect garbage and return the C heap's free pages to the kernel (glibc only; a no-op elsewhere)."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def resident_bytes() -> int:
    """Current RSS of this process, from ``/proc/self/statm`` (its second field, in pages)."""
    fields = STATM_PATH.read_text().split()
    return int(fields[1]) * PAGE_BYTES


def _status_bytes(key: str) -> int:
    """A ``kB`` value such as ``VmHWM`` from ``/proc/self/status``, in bytes."""
    for line in STATUS_PATH.read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    raise ConfigurationError(f"{STATUS_PATH} has no {key} line")


def high_water_mark_bytes() -> int:
    """The kernel's peak RSS of this process since start or since the last reset."""
    return _status_bytes("VmHWM")


def reset_high_water_mark() -> bool:
    """Reset the kernel's peak RSS to the current RSS; False where the kernel does not allow it."""
    try:
        CLEAR_REFS_PATH.write_text(RESET_PEAK_VALUE)
    except OSError:
        return False
    return True


def kernel_reset_works() -> bool:
    """Whether resetting ``VmHWM`` really takes effect here (the write can succeed and do nothing)."""
    if not STATUS_PATH.exists() or not reset_high_water_mark():
        return False
    # Right after a reset the high-water mark is the current RSS; allow a few pages of growth between reads.
    return high_water_mark_bytes() <= resident_bytes() + 64 * PAGE_BYTES


class PeakMemoryMeter:
    """Measures peak RSS above a baseline over windows opened by :meth:`start` and closed by :meth:`stop`.

    ``method`` is ``None`` to use the kernel's counter where it works and sampling elsewhere.
    """

    def __init__(
        self,
        method: MeasurementMethod | None = None,
        sampling_interval_seconds: float = DEFAULT_SAMPLING_INTERVAL_SECONDS,
    ) -> None:
        if sampling_interval_seconds <= 0:
            raise ConfigurationError(f"sampling interval must be positive, not {sampling_interval_seconds}")
        self.method: MeasurementMethod = method or ("kernel" if kernel_reset_works() else "sampling")
        self.sampling_interval_seconds = sampling_interval_seconds
        self._baseline: int | None = None
        self._sampled_peak = 0
        self._samples_taken = 0
        self._stop_sampling = threading.Event()
        self._sampler: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._baseline is not None

    @property
    def samples_taken(self) -> int:
        """RSS readings the sampler took since the window opened (0 with the kernel method): a reader can
        tell whether the sampler saw a moment, on a machine too loaded for its interval to hold."""
        return self._samples_taken

    def start(self) -> None:
        """Open a window: free memory goes back to the kernel, then the RSS becomes the baseline and the
        peak is reset to it."""
        if self.running:
            raise ConfigurationError("the memory meter is already measuring; stop it first")
        release_free_memory()
        if self.method == "kernel":
            if not reset_high_water_mark():
                raise ConfigurationError(f"cannot write {CLEAR_REFS_PATH}; use the sampling method")
            self._baseline = resident_bytes()
            return
        self._baseline = resident_bytes()
        self._sampled_peak = self._baseline
        self._samples_taken = 0
        self._stop_sampling.clear()
        self._sampler = threading.Thread(target=self._sample, name="peak-memory-sampler", daemon=True)
        self._sampler.start()

    def stop(self) -> int:
        """Close the window and return its peak RSS minus the baseline, in bytes (never negative)."""
        if self._baseline is None:
            raise ConfigurationError("the memory meter was not started")
        if self.method == "kernel":
            peak = high_water_mark_bytes()
        else:
            self._stop_sampling.set()
            if self._sampler is not None:
                self._sampler.join()
            peak = max(self._sampled_peak, resident_bytes())
        baseline, self._baseline = self._baseline, None
        return max(0, peak - baseline)

    def _sample(self) -> None:
        while not self._stop_sampling.wait(self.sampling_interval_seconds):
            self._sampled_peak = max(self._sampled_peak, resident_bytes())
            self._samples_taken += 1
