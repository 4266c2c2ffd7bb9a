"""How much packing trials onto one GPU speeds a study up, and how busy it keeps the GPU (issue 17).

    .venv/bin/python benchmarks/gpu_packing.py [--gpus 1 0.5 0.25 0.125] [--seeds 4] [--epochs N]
    .venv/bin/python benchmarks/gpu_packing.py --check      # on a CPU machine: the specs validate

The same fixed trials (no tuning: 3 arms x 4 complexity levels x --seeds, 48 by default) at the
GPU-sized 2D spec's size (search_spaces/gpu/skip_vs_complexity.yaml: 256x256 images, U-Net 16-256
channels, its epochs) run as one whole `run_study` per resources.gpu value, in one invocation, each
into a fresh MLflow store. For each packing it records the whole study's wall-clock, the trial
phase (first trial start to last trial end, from the MLflow runs), the trial median, and the GPU's
utilisation sampled by NVML in this process every 0.5 s (device-wide: the honest figure, idle gaps
between trials count as 0%) over the whole study and over the trial phase, next to the
sample-weighted figure the study run logged itself. Ratios are against gpu 1.

Targets on one H100/H200 (issue 17): whole study >= 3x faster at gpu 0.25 than at gpu 1; GPU
utilisation >= 70% over the trial phase at the best packing. Needs one visible NVIDIA GPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import record, timed_study  # noqa: E402
from study import metrics_names as M  # noqa: E402
from study.spec import load_spec  # noqa: E402

BASE = ROOT / "search_spaces" / "gpu" / "skip_vs_complexity.yaml"
ALPHAS = [0.1, 0.5, 0.7, 0.9]


def packing_spec(gpu: float, *, seeds: int, epochs: int | None, cpu: float, tmp: Path) -> Path:
    """The GPU-sized 2D spec as fixed trials (no tuning) at `gpu` per trial."""
    raw = yaml.safe_load(BASE.read_text())
    raw["name"] = f"bench_gpu_packing_{gpu:g}".replace(".", "_")
    raw["factors"]["alpha"] = ALPHAS
    raw["hyperparameters"] = {"lr": 0.001, "batch_size": 8, "optimizer": "adam"}
    raw.pop("tuning", None)
    raw["confirm"] = {"seeds": list(range(seeds))}
    raw["resources"] = {"cpu": cpu, "gpu": gpu}
    if epochs is not None:
        raw["training"]["epochs"] = epochs
    path = tmp / f"gpu_packing_{gpu:g}.yaml"
    path.write_text(yaml.safe_dump(raw))
    load_spec(path)  # fails here, with the spec's own message, before any GPU time is spent
    return path


class NvmlTrace:
    """(time, utilisation %) of GPU 0 every `interval_s`, in a thread; NVML does not touch CUDA."""

    def __init__(self, interval_s: float = 0.5) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        self._nvml = pynvml
        self.interval_s = interval_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            util = self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu
            self.samples.append((time.time(), float(util)))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> NvmlTrace:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def mean(self, start: float = 0.0, end: float = float("inf")) -> tuple[float, float]:
        """Mean utilisation and share of 0% samples between `start` and `end` (epoch seconds)."""
        window = [u for t, u in self.samples if start <= t <= end]
        if not window:
            return float("nan"), float("nan")
        return statistics.fmean(window), sum(u == 0 for u in window) / len(window)


def one_packing(spec_path: Path) -> dict:
    """Run the whole study once; its timings and GPU figures."""
    trace = NvmlTrace()
    timed = timed_study(spec_path, around=trace)
    elapsed, runs, study_metrics = timed.elapsed_s, timed.runs, timed.study_metrics
    start = min(r.info.start_time for r in runs) / 1000
    end = max(r.info.end_time for r in runs) / 1000
    util_study, idle_study = trace.mean()
    util_trials, idle_trials = trace.mean(start, end)
    return {
        "trials": len(runs),
        "study_s": round(elapsed, 1),
        "trial_phase_s": round(end - start, 1),
        "trial_s_median": round(statistics.median((r.info.end_time - r.info.start_time) / 1000 for r in runs), 1),
        "gpu_util_study": round(util_study, 1),
        "gpu_idle_share_study": round(idle_study, 3),
        "gpu_util_trial_phase": round(util_trials, 1),
        "gpu_idle_share_trial_phase": round(idle_trials, 3),
        "gpu_util_logged": round(study_metrics.get(M.GPU_UTIL_MEAN, float("nan")), 1),
        "gpu_peak_memory_mb": round(study_metrics.get(M.GPU_PEAK_MEMORY, float("nan")), 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", type=float, nargs="+", default=[1.0, 0.5, 0.25, 0.125])
    parser.add_argument("--seeds", type=int, default=4, help="trials = 12 cells x seeds (48 by default)")
    parser.add_argument("--epochs", type=int, default=None, help="override the spec's (quick checks)")
    parser.add_argument("--cpu", type=float, default=2.0, help="CPUs per trial (resources.cpu)")
    parser.add_argument("--check", action="store_true", help="only build and validate the specs (no GPU needed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        specs = {g: packing_spec(g, seeds=args.seeds, epochs=args.epochs, cpu=args.cpu, tmp=Path(tmp)) for g in args.gpus}
        if args.check:
            print(f"ok: {len(specs)} packings of {12 * args.seeds} trials each: gpu {', '.join(f'{g:g}' for g in specs)}")
            return
        try:
            _gpu_name()
        except Exception as exc:  # noqa: BLE001 - pynvml's errors name the library, not the problem
            sys.exit(f"gpu_packing needs one visible NVIDIA GPU (NVML: {exc}); --check validates the specs without one")
        by_gpu = {g: one_packing(path) for g, path in specs.items()}
    base = by_gpu.get(1.0)
    ratios = {}
    if base is not None:
        ratios = {
            f"{g:g}": {
                "study_speedup": round(base["study_s"] / r["study_s"], 2),
                "trial_phase_speedup": round(base["trial_phase_s"] / r["trial_phase_s"], 2),
            }
            for g, r in by_gpu.items()
        }
    record(
        ROOT / "benchmarks" / "results.jsonl",
        {
            "benchmark": "gpu_packing",
            "command": "python " + " ".join(sys.argv),
            "gpu": _gpu_name(),
            "by_gpu": {f"{g:g}": r for g, r in by_gpu.items()},
            "speedup_vs_gpu_1": ratios,
        },
    )


def _gpu_name() -> str:
    import pynvml

    pynvml.nvmlInit()
    return str(pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0)))


if __name__ == "__main__":
    main()
