"""The store actor refuses samples stamped too far ahead of its own clock (collectors/store_actor.py): a collector
screens against its node's clock, which cannot catch that clock itself running ahead."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collectors.store_actor import TelemetryStoreService, actor_fingerprint, store_fingerprint
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


def test_a_sample_accepted_ahead_of_the_clock_is_the_node_s_latest_reading(tmp_path: Path):
    """Regression: the embedded store took a latest reading up to 5 min ahead whatever the actor accepted, so a
    sample 10 min ahead, written under a 15-minute tolerance, was in every window but in no latest reading."""
    config = tmp_path / "config.yaml"
    config.write_text("telemetry:\n  future_tolerance: 15min\n")
    service = TelemetryStoreService({"TELEMETRY_DATA_DIR": str(tmp_path / "t")}, config_path=str(config))
    ahead = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=10)
    assert service.write([sample("fast", ahead)]) == 1
    assert [(reading.node_id, reading.timestamp) for reading in service.latest("fast")] == [("fast", ahead)]
    service.store.close()


def test_samples_the_backend_refuses_too_are_counted_with_those_stamped_ahead(tmp_path: Path, monkeypatch):
    service = TelemetryStoreService({"TELEMETRY_DATA_DIR": str(tmp_path / "t")})
    now = datetime.now(UTC).replace(microsecond=0)

    def beyond_retention(samples):
        raise WriteRefused("points beyond the bucket's retention", 1, len(samples) - 1)

    monkeypatch.setattr(service.store, "write", beyond_retention)
    with pytest.raises(WriteRefused) as refused:
        service.write([sample("old", now - timedelta(days=400)), sample("fine", now),
                       sample("fast-clock", now + timedelta(hours=1))])
    assert (refused.value.refused, refused.value.written) == (2, 1)  # every sample accounted for
    assert "retention" in str(refused.value) and "fast-clock" in str(refused.value)


def test_a_changed_tolerance_in_the_same_file_replaces_the_store_actor(tmp_path: Path):
    """The actor reads it once: a fingerprint of the file's path alone kept the old tolerance after a redeploy."""
    config = tmp_path / "config.yaml"
    config.write_text("telemetry:\n  future_tolerance: 2min\n")
    before, key = actor_fingerprint(None, str(config)), store_fingerprint(None, str(config))
    config.write_text("telemetry:\n  future_tolerance: 10min\n")
    assert actor_fingerprint(None, str(config)) != before
    assert store_fingerprint(None, str(config)) == key  # the collectors' store key: the same store
