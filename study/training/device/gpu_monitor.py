"""How busy the GPU is while a trial runs: NVML utilisation sampled in a background thread.

Packing trials onto fractional GPUs only pays when the GPU is busy, and issue 17 measured it idle
in 311 of 365 samples; so every CUDA trial logs the mean utilisation it saw (`gpu_util_mean`), how
many samples that mean is over (`gpu_util_samples`, so a study-wide mean can weight trials by
time), the device memory in use at its fullest (`gpu_device_memory_peak_mb`, every process on the
device) and its own allocator peak (`gpu_peak_memory_mb`).

NVML reports the whole device: trials packed on one GPU all see the same utilisation, which is the
figure that matters (is the device busy), not a trial's own share. `pynvml` (nvidia-ml-py) is
imported only when a trial runs on CUDA; on CPU nothing is sampled and no GPU metric is logged.
The aggregation (`Utilisation`) is plain Python so it can be tested without a GPU.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from study import metrics_names as M

log = logging.getLogger(__name__)

SAMPLE_INTERVAL_S = 0.5  # NVML's utilisation is itself averaged over 1/6-1 s; faster adds nothing

# One reading: (utilisation in percent, device memory in use in MB).
Reading = tuple[float, float]
Source = Callable[[], Reading | None]


@dataclass
class Utilisation:
    """Running aggregate of utilisation readings (mean, count) and the device memory peak."""

    total: float = 0.0
    samples: int = 0
    memory_peak_mb: float = 0.0

    def add(self, reading: Reading | None) -> None:
        if reading is None:  # a failed read is no sample, not a 0% sample
            return
        util, memory_mb = reading
        self.total += float(util)
        self.samples += 1
        self.memory_peak_mb = max(self.memory_peak_mb, float(memory_mb))

    @property
    def mean(self) -> float:
        return self.total / self.samples if self.samples else float("nan")

    def metrics(self) -> dict[str, float]:
        """The GPU metrics of a trial; empty when nothing was sampled (CPU, or NVML unavailable)."""
        if not self.samples:
            return {}
        return {
            M.GPU_UTIL_MEAN: self.mean,
            M.GPU_UTIL_SAMPLES: float(self.samples),
            M.GPU_DEVICE_MEMORY_PEAK: self.memory_peak_mb,
        }


def weighted_mean(figures: Iterable[tuple[float, float]]) -> tuple[float, float]:
    """(mean, samples) of many trials' (mean, samples) pairs: each trial weighs by its samples,
    i.e. by how long it ran. Pairs with no samples or a NaN mean are left out."""
    total = n = 0.0
    for mean, samples in figures:
        if samples and samples > 0 and mean == mean:
            total += float(mean) * float(samples)
            n += float(samples)
    return (total / n if n else float("nan")), n


class GpuSampler:
    """Samples `source` every `interval_s` seconds in a daemon thread while it is entered.

    `snapshot()` may be called at any time (each epoch) for the running figures; the thread only
    adds numbers to `Utilisation` under a lock, so a trial's epoch loop is not slowed.
    """

    def __init__(self, source: Source | None, *, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self.source = source
        self.interval_s = interval_s
        self.figures = Utilisation()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuSampler:
        if self.source is not None:
            self._thread = threading.Thread(target=self._run, name="segstudy-gpu-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5 * self.interval_s + 1)

    def sample_once(self) -> None:
        assert self.source is not None
        try:
            reading = self.source()
        except Exception as exc:  # noqa: BLE001 - a monitoring failure must never end a trial
            log.warning("GPU sampling stopped: %s", exc)
            self.source = None
            return
        with self._lock:
            self.figures.add(reading)

    def _run(self) -> None:
        while self.source is not None:
            self.sample_once()
            if self._stop.wait(self.interval_s):
                return

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return self.figures.metrics()


def sampler_for(device: torch.device) -> GpuSampler:
    """A sampler of `device` through NVML; one that samples nothing on CPU or without NVML."""
    return GpuSampler(nvml_source(device) if device.type == "cuda" else None)


def nvml_source(device: torch.device) -> Source | None:
    """Readings of the physical GPU behind `device`, found by UUID (CUDA_VISIBLE_DEVICES renumbers
    devices inside a Ray worker, NVML does not); None when NVML cannot be used."""
    try:
        import pynvml

        pynvml.nvmlInit()
        uuid = str(torch.cuda.get_device_properties(device).uuid)
        handle = pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
    except Exception as exc:  # noqa: BLE001 - no NVML (library, driver, permission): no GPU metrics
        log.warning("GPU utilisation is not sampled: %s", exc)
        return None

    def read() -> Reading:
        util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20
        return float(util), float(memory)

    return read


__all__ = ["GpuSampler", "Utilisation", "nvml_source", "sampler_for", "weighted_mean"]
