"""Workers the command's own Ray cannot hold are refused at once (no real Ray here)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from training.power import ray_trainer
from training.power.scaling import TrainScaling
from training.settings import PowerPredictorConfig


@pytest.fixture
def own_ray(monkeypatch) -> None:
    """A Ray this process started, with 2 CPUs and no GPU; nothing may reach Ray Train."""
    monkeypatch.setattr(ray_trainer.ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray_trainer, "started_here", lambda: True)
    monkeypatch.setattr(ray_trainer.ray, "cluster_resources", lambda: {"CPU": 2.0, "memory": 8e9})
    monkeypatch.setattr(ray_trainer, "check_before_run", lambda *args: pytest.fail("reached the run"))


def train(scaling: TrainScaling) -> None:
    arrays = SimpleNamespace(inputs=[0])
    ray_trainer.train_power_lstm(arrays, arrays, PowerPredictorConfig(), 1.0, scaling=scaling)


@pytest.mark.parametrize(("scaling", "phrase"), [
    (TrainScaling(num_workers=3, cpus_per_worker=1.0), "3 worker(s), each reserving CPU 1: it has CPU 2"),
    (TrainScaling(num_workers=1, cpus_per_worker=1.0, use_gpu=True),
     "each reserving CPU 1, GPU 1: it has CPU 2, GPU 0"),
    (TrainScaling(num_workers=1, cpus_per_worker=1.0, resources_per_worker={"trainer": 1.0}), "trainer 0"),
])
def test_workers_the_command_s_own_ray_cannot_hold_are_refused_at_once(own_ray, scaling, phrase):
    """Regression: `train_lstm --use-gpu` on a machine without a GPU (or more workers than its CPUs) waited 15 start
    timeouts of a minute, holding the model's retrain lock, before saying so."""
    with pytest.raises(ray_trainer.WorkersUnavailable) as refused:
        train(scaling)
    assert phrase in str(refused.value) and "--num-workers" in str(refused.value)


@pytest.mark.parametrize("scaling", [TrainScaling(num_workers=2, cpus_per_worker=1.0),
                                     TrainScaling(num_workers=20, cpus_per_worker=0.1)])  # 2 // 0.1 is 19.0
def test_workers_that_fit_go_on_to_the_run(own_ray, scaling):
    with pytest.raises(pytest.fail.Exception, match="reached the run"):
        train(scaling)
