"""Join a Ray cluster, or start Ray on this machine with workers that start warm.

Without an address Ray is always started here, never found: see `connect_ray`.
"""

from __future__ import annotations

import logging
import os

import ray

from study import process_state
from study.errors import SegstudyError, first_line
from study.redact import mask_uri
from study.run.cluster.ray_reaper import reap_on_exit
from study.run.cluster.warm_workers import local_ray_config


def connect_ray(address: str | None, *, trials_at_once: int = 1) -> bool:
    """Join `address` or start a local Ray whose idle workers preload the trainable (see
    study.run.cluster.warm_workers); returns True when this call started it.

    Without an address Ray is always started here (`address="local"`): a bare `ray.init()` joins
    whatever cluster a `ray start` left on this machine (/tmp/ray/ray_current_cluster) or
    RAY_ADDRESS names, and the study would run there with that cluster's code and resources.
    """
    process_state.let_tune_use_prestarted_workers()
    if ray.is_initialized():
        return False
    kwargs = {"logging_level": logging.WARNING, "log_to_driver": True}
    with process_state.defer_stop():  # a Ray cut half-way through its start would outlive the driver
        if address:
            try:
                ray.init(address=address, **kwargs)
            except (ConnectionError, ValueError, RuntimeError) as exc:  # nothing there, or not a Ray address
                raise SegstudyError(f"--address {mask_uri(address)}: cannot join a Ray cluster ({first_line(exc)})") from None
        else:
            ray.init(
                address="local",
                num_cpus=os.cpu_count() or 1,
                include_dashboard=False,
                _system_config=local_ray_config(trials_at_once),
                **kwargs,
            )
            reap_on_exit()  # a SIGKILLed driver must not leave Ray's agents running
    return True


__all__ = ["connect_ray"]
