"""The store actor refuses samples stamped too far ahead of its own clock (collectors/store_actor.py): a collector
screens against its node's clock, which cannot catch that clock itself running ahead."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collectors.store_actor import TelemetryStoreService
from core.stores.base import WriteRefused
from core.telemetry import TelemetrySample


def sample(node: str, at: datetime) -> TelemetrySample:
    return TelemetrySample(timestamp=at, node_id=node, source="ipmi", device_id="node", power_watts=500.0)


def test_samples_of_a_node_whose_clock_runs_ahead_are_refused_for_good_and_the_others_written(tmp_path: Path):
    config = tmp_path / "config.yaml"
    config.write_text("telemetry:\n  future_tolerance: 2min\n")
    service = TelemetryStoreService({"TELEMETRY_DATA_DIR": str(tmp_path / "t")}, config_path=str(config))
    now = datetime.now(UTC).replace(microsecond=0)
    with pytest.raises(WriteRefused) as refused:
        service.write([sample("fine", now), sample("fine", now + timedelta(minutes=1)),
                       sample("fast-clock", now + timedelta(hours=1))])
    assert (refused.value.refused, refused.value.written) == (1, 2)
    assert "fast-clock" in str(refused.value) and "fine" not in str(refused.value)
    assert service.nodes() == ["fine"]
    assert service.write([sample("fine", now + timedelta(seconds=5))]) == 1
    service.store.close()
