"""Device, threads and mixed precision from the trial's resources."""
from __future__ import annotations

import contextlib
import os

import torch


def choose_device(requested: str, gpus: float) -> torch.device:
    """cuda only when the trial was given a GPU share and CUDA is there; 'cuda' without one is an error."""
    if requested == "cpu":
        return torch.device("cpu")
    has_cuda = torch.cuda.is_available()
    if requested == "cuda":
        if not has_cuda:
            from bench.errors import BenchError

            raise BenchError("device: cuda was asked for but no CUDA device is visible", field="trial.device",
                             fix="set device: auto or cpu, or give the trial resources.gpu > 0 on a GPU machine")
        return torch.device("cuda")
    return torch.device("cuda") if has_cuda and gpus > 0 else torch.device("cpu")


THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def set_threads(cpus: float) -> int:
    """Match every compute thread pool to the CPUs the scheduler gave this trial: torch's intra-op
    threads, and the BLAS / OpenMP pools numpy, scipy and scikit-learn bring (metrics run there
    after every epoch; left at one thread per core they would spill onto a neighbour's CPU).
    Pools loaded later start from the environment variables set here."""
    from threadpoolctl import threadpool_limits

    n = max(1, int(cpus))
    torch.set_num_threads(n)
    for name in THREAD_ENV:
        os.environ[name] = str(n)
    threadpool_limits(limits=n)
    return n


def autocast(device: torch.device, amp: str):
    """bf16/fp16 autocast on the trial's device; a no-op when amp is off."""
    if amp == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    if device.type == "cpu" and dtype == torch.float16:
        dtype = torch.bfloat16  # CPU autocast supports bf16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, amp: str):
    """fp16 on CUDA needs loss scaling; everything else runs unscaled."""
    return torch.amp.GradScaler("cuda", enabled=(amp == "fp16" and device.type == "cuda"))


def loader_settings(device: torch.device, cpus: float, requested) -> dict:
    """DataLoader workers sized to the trial's CPUs (no oversubscription); pinned memory for CUDA."""
    workers = (max(0, int(cpus) - 1) if requested == "auto" else int(requested))
    return {"workers": workers, "pin_memory": device.type == "cuda"}
