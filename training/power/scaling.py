"""How one LSTM training run spreads over Ray Train: the settings every starter of a run shares (the command
lines, the API's retraining and its config, the scheduler, a Tune search, the suites)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveInt


class TrainScaling(BaseModel):
    """Ray Train's workers for one run and what each reserves (its `ScalingConfig`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_workers: PositiveInt = Field(1, description="Ray Train workers (data-parallel, DDP when more than one)")
    use_gpu: bool = Field(False, description="one GPU per worker")
    cpus_per_worker: float | None = Field(
        1.0, gt=0, description="CPUs each worker reserves, and torch's threads in it; None: a Ray of one machine the "
        "run starts itself shares its free CPUs among the workers (ray_trainer.free_cpus_each), any other Ray 1")
    resources_per_worker: dict[str, NonNegativeFloat] = Field(
        default_factory=dict, description="custom Ray resources each worker reserves besides its CPUs, e.g. "
        '{"trainer": 1} so that each node offering one trainer hosts one worker')

    def train_scaling(self) -> TrainScaling:
        """These settings alone, without the fields of a model that extends them."""
        return TrainScaling(**{name: getattr(self, name) for name in TrainScaling.model_fields})


ONE_WORKER = TrainScaling()  # the default: one worker, one CPU
