"""How many trials of a study's size the cluster holds at once, and refusing a trial no node can hold."""

from __future__ import annotations

import os

import ray

from study.errors import SegstudyError
from study.spec import StudySpec


def local_trials_at_once(spec: StudySpec) -> int:
    """How many trials a Ray started on this machine runs at once (CPU-bound; before Ray knows its GPUs)."""
    fits = trials_that_fit(spec, cpus=os.cpu_count() or 1, gpus=None)
    if spec.tuning is not None and spec.tuning.max_concurrent:
        fits = min(fits, spec.tuning.max_concurrent)
    return max(1, fits)


def check_resources(spec: StudySpec) -> None:
    """A trial that asks for more than any node has would wait forever: refuse it up front."""
    want = {"CPU": spec.resources.cpu, "GPU": spec.resources.gpu}
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    for kind, amount in want.items():
        if amount <= 0:
            continue
        best = max((res.get(kind, 0.0) for res in nodes), default=0.0)
        if best < amount:
            raise SegstudyError(
                f"resources.{kind.lower()}: {amount:g} per trial requested, but the largest node of this "
                f"Ray cluster has {best:g} {kind}; lower resources.{kind.lower()} or use a bigger cluster"
            )


def cluster_capacity(spec: StudySpec) -> int:
    """How many trials of this size fit on the cluster at once (keeps every CPU/GPU busy)."""
    total = ray.cluster_resources()
    return trials_that_fit(spec, cpus=total.get("CPU", 0), gpus=total.get("GPU", 0))


def trials_that_fit(spec: StudySpec, *, cpus: float, gpus: float | None) -> int:
    """How many trials of the spec's size fit in `cpus` and `gpus` (None: not known yet; at least one)."""
    fits = [int(cpus // spec.resources.cpu)]
    if spec.resources.gpu > 0 and gpus is not None:
        fits.append(int(gpus // spec.resources.gpu))
    return max(1, min(fits))


__all__ = ["check_resources", "cluster_capacity", "local_trials_at_once", "trials_that_fit"]
