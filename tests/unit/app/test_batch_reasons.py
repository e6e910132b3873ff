"""A prediction batch item's error: a domain error's own message naming the field, else only the error's type."""

from __future__ import annotations

from app.batches import reason
from training.cost.catalog import UnknownGpuType, load_catalog


class Wrapped(Exception):
    """How a deployment's error arrives through Ray: wrapped, with the original as `cause`."""

    def __init__(self, cause: BaseException):
        super().__init__(f"Traceback (most recent call last): ... {cause}")
        self.cause = cause


def test_a_gpu_type_the_cost_model_cannot_price_names_the_field():
    text = reason(Wrapped(UnknownGpuType("B200", load_catalog())))
    assert text.startswith("UnknownGpuType: resources.gpu_type: gpu_type 'B200' is not in the price catalog")
    assert "Traceback" not in text


def test_any_other_error_is_only_its_type():
    assert reason(Wrapped(RuntimeError("cannot open /var/lib/models/cost_gbm/3"))) == "RuntimeError"
