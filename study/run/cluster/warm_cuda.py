"""Pay a GPU worker's CUDA start-up before its first trial, not inside it.

Issue 17 measured the first trial of each worker on an H200 about 18 s slower than the rest: worker
start, imports, then the CUDA context, cuDNN/cuBLAS loading and the first kernels. Ray imports this
module in its idle workers (study/run/cluster/warm_workers.py PRELOAD) while the driver builds the data, so
a trial placed there finds CUDA ready.

Only where that is safe: CUDA fixes the devices a process can see when it initialises, and Ray
names a trial's GPU (CUDA_VISIBLE_DEVICES) only when the trial is placed. With several GPUs visible
a warmed worker would put every trial on the first one, so the warm-up runs only when exactly one
GPU is visible to the node; elsewhere (CPU machines, multi-GPU nodes, no NVML) importing this
module does nothing. NVML is asked first because it counts GPUs without initialising CUDA.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def one_gpu_visible() -> bool:
    """True when this process would see exactly one GPU, asked without initialising CUDA."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()]) == 1
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetCount() == 1
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no NVML library or driver: a CPU machine
        return False


def warm_cuda() -> bool:
    """Create the CUDA context and run one small conv step (bf16 autocast where supported, as a
    trial would) so cuDNN and cuBLAS are loaded; returns whether it did."""
    if not one_gpu_visible():
        return False
    import torch

    if not torch.cuda.is_available():
        return False
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    conv = torch.nn.Conv2d(1, 8, 3, padding=1).cuda()
    x = torch.randn(2, 1, 64, 64, device="cuda")
    with torch.autocast("cuda", dtype=dtype):
        y = conv(x)
    y.float().mean().backward()
    torch.cuda.synchronize()
    return True


try:
    warm_cuda()
except Exception as exc:  # noqa: BLE001 - a failed warm-up costs the first trial its start-up, nothing more
    log.warning("CUDA warm-up skipped: %s", exc)
