"""The peak-memory meter sees an allocation of known size, with either method, and forgets it on reset."""

from __future__ import annotations

import time

import pytest
import torch

from agent.benchmark.memory import MeasurementMethod, PeakMemoryMeter, kernel_reset_works
from agent.errors import ConfigurationError

MEBIBYTE = 1024 * 1024
ALLOCATION_BYTES = 200 * MEBIBYTE
# The interpreter and torch may touch a few more pages while the window is open; freed memory is not counted.
TOLERANCE_BYTES = 24 * MEBIBYTE


def allocate_and_release(meter: PeakMemoryMeter) -> None:
    """Touch every page of a 200 MiB tensor (so it is resident), keep it until the meter has seen it, free it.

    With sampling, "seen" is two samples taken while the tensor lives (the first may have begun before it
    existed), however long a loaded machine takes to schedule the sampler; the kernel's counter sees it
    at once.
    """
    block = torch.ones(ALLOCATION_BYTES // 4, dtype=torch.float32)
    if meter.method == "sampling":
        seen_after, deadline = meter.samples_taken + 2, time.monotonic() + 60
        while meter.samples_taken < seen_after:
            assert time.monotonic() < deadline, "the sampler took no sample in 60 s"
            time.sleep(0.001)
    del block


def methods() -> list[MeasurementMethod]:
    return ["kernel", "sampling"] if kernel_reset_works() else ["sampling"]


@pytest.mark.parametrize("method", methods())
def test_peak_shows_a_freed_allocation_within_tolerance(method: MeasurementMethod) -> None:
    meter = PeakMemoryMeter(method)
    meter.start()
    allocate_and_release(meter)
    peak = meter.stop()
    assert abs(peak - ALLOCATION_BYTES) < TOLERANCE_BYTES, peak / MEBIBYTE


@pytest.mark.parametrize("method", methods())
def test_a_new_window_does_not_report_an_earlier_peak(method: MeasurementMethod) -> None:
    meter = PeakMemoryMeter(method)
    meter.start()
    allocate_and_release(meter)
    meter.stop()
    meter.start()
    small = torch.ones(8 * MEBIBYTE // 4)
    peak = meter.stop()
    del small
    assert peak < ALLOCATION_BYTES // 4, peak / MEBIBYTE


def test_memory_held_before_the_window_is_not_counted() -> None:
    held = torch.ones(ALLOCATION_BYTES // 4)
    meter = PeakMemoryMeter()
    meter.start()
    held.add_(1.0)
    peak = meter.stop()
    del held
    assert peak < TOLERANCE_BYTES, peak / MEBIBYTE


def test_the_kernel_counter_is_used_where_it_works() -> None:
    assert PeakMemoryMeter().method == ("kernel" if kernel_reset_works() else "sampling")


def test_misuse_is_rejected() -> None:
    meter = PeakMemoryMeter("sampling")
    with pytest.raises(ConfigurationError):
        meter.stop()
    meter.start()
    with pytest.raises(ConfigurationError):
        meter.start()
    meter.stop()
    with pytest.raises(ConfigurationError):
        PeakMemoryMeter("sampling", sampling_interval_seconds=0)


def test_memory_the_allocator_kept_and_reuses_is_counted() -> None:
    """Freed heap chunks below a live one stay mapped; the meter must hand them back before measuring."""
    chunk_bytes = 100 * 1024  # below glibc's mmap threshold: served from the heap, not mmap
    count = 1000

    def touch_chunks() -> list[bytearray]:
        chunks = [bytearray(chunk_bytes) for _ in range(count)]
        for chunk in chunks:
            chunk[::4096] = b"\x01" * len(range(0, chunk_bytes, 4096))  # make every page resident
        return chunks

    chunks = touch_chunks()
    fence = bytearray(chunk_bytes)  # keeps the freed chunks below the top of the heap
    del chunks
    meter = PeakMemoryMeter()
    meter.start()
    chunks = touch_chunks()
    peak = meter.stop()
    del chunks, fence
    assert abs(peak - count * chunk_bytes) < TOLERANCE_BYTES, peak / MEBIBYTE
