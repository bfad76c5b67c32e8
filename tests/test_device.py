"""The GPU path's logic, checked on CPU: device choice, autocast, loss scaling, loader settings."""
from __future__ import annotations

import pytest
import torch

from bench.trial.device import autocast, choose_device, grad_scaler, loader_settings, set_threads
from bench.errors import BenchError
from bench.config.matrix import trial_key
from bench.config.schema import TrialConfig, TrialSpec
from bench.trial.context import TrialContext
from bench.trial.run import run_trial
from conftest import tiny_trial


def test_device_follows_the_trials_gpu_share():
    assert choose_device("auto", 0).type == "cpu"
    assert choose_device("cpu", 1).type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert choose_device("auto", 0.5).type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(BenchError) as err:
        choose_device("cuda", 1)
    assert "trial.device" in err.value.render() and "device: auto" in err.value.render()


def test_loader_pins_memory_only_for_cuda_and_sizes_workers_to_cpus():
    assert loader_settings(torch.device("cpu"), 1, "auto") == {"workers": 0, "pin_memory": False}
    assert loader_settings(torch.device("cuda"), 4, "auto") == {"workers": 3, "pin_memory": True}
    assert loader_settings(torch.device("cpu"), 4, 2)["workers"] == 2


def test_threads_match_the_cpus_given(monkeypatch):
    import numpy  # noqa: F401  (its BLAS pool is loaded before the limit, as in a trial)
    from threadpoolctl import threadpool_info, threadpool_limits

    from bench.trial.device import THREAD_ENV

    for name in THREAD_ENV:  # set by set_threads; put back as they were after the test
        monkeypatch.delenv(name, raising=False)

    before = torch.get_num_threads()
    with threadpool_limits(limits=None):  # restores every pool's size afterwards
        try:
            assert set_threads(1.0) == 1 and torch.get_num_threads() == 1
            assert set_threads(0.5) == 1  # a fractional share still gets one thread
            pools = threadpool_info()
            assert pools and all(pool["num_threads"] == 1 for pool in pools), pools  # numpy's BLAS too
        finally:
            torch.set_num_threads(before)


def test_autocast_bf16_on_cpu_and_fp16_falls_back_to_bf16():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    for amp in ("bf16", "fp16"):
        with autocast(torch.device("cpu"), amp):
            assert (a @ b).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "off"):
        assert (a @ b).dtype == torch.float32


def test_loss_scaling_only_for_fp16_on_cuda():
    assert not grad_scaler(torch.device("cpu"), "fp16").is_enabled()
    assert not grad_scaler(torch.device("cpu"), "bf16").is_enabled()


def test_trial_with_bf16_autocast_runs_on_cpu(registry):
    config = TrialConfig.model_validate(tiny_trial(amp="bf16", fusion="shallow")).model_dump(mode="json")
    row = run_trial(TrialSpec(trial_key(config), {}, {}, config), TrialContext(registry=registry)).row
    assert row["status"] == "ok", row["error"]
    assert row["device"] == "cpu" and 0 <= row["accuracy"] <= 1
