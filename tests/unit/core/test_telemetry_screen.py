"""The ingestion screen: implausible power and future timestamps are refused and counted, the rest kept in order;
a device reading out of range loses only that value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from core.telemetry import SourceKind, TelemetrySample
from core.telemetry_screen import RejectReason, power_bound, screen_samples

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def reading(watts: float | None, *, ahead_s: float = 0.0, source: str = "ipmi", limit: float | None = None,
            device: str = "node") -> TelemetrySample:
    return TelemetrySample(timestamp=NOW + timedelta(seconds=ahead_s), node_id="n1", source=source,
                           device_id=device, power_watts=watts, power_limit_watts=limit)


def test_a_single_bmc_sentinel_reading_is_refused_and_counted() -> None:
    good = [reading(640.0), reading(655.0, ahead_s=-5)]
    screened = screen_samples([good[0], reading(65_535.0), good[1]], NOW)
    assert screened.accepted == good
    assert screened.rejected == {RejectReason.BMC_SENTINEL: 1}
    assert screened.examples[RejectReason.BMC_SENTINEL].power_watts == 65_535.0


def test_the_sentinel_is_refused_even_under_a_generous_node_bound() -> None:
    screened = screen_samples([reading(65_535.0)], NOW, max_node_watts=100_000)
    assert screened.rejected == {RejectReason.BMC_SENTINEL: 1} and screened.accepted == []


def test_a_sample_thirty_days_ahead_is_refused_and_counted() -> None:
    screened = screen_samples([reading(500.0, ahead_s=30 * 86400), reading(None, ahead_s=30 * 86400)], NOW)
    assert screened.accepted == []
    assert screened.rejected == {RejectReason.FUTURE_TIMESTAMP: 2}  # with or without a power reading


def test_clock_skew_within_the_tolerance_is_kept() -> None:
    assert len(screen_samples([reading(500.0, ahead_s=299)], NOW).accepted) == 1
    assert screen_samples([reading(500.0, ahead_s=301)], NOW).rejected == {RejectReason.FUTURE_TIMESTAMP: 1}
    assert screen_samples([reading(500.0, ahead_s=30)], NOW, future_tolerance_s=10).accepted == []


def test_wall_power_above_the_node_bound_is_refused() -> None:
    screened = screen_samples([reading(14_999.0), reading(15_001.0), reading(40_000.0)], NOW)
    assert [s.power_watts for s in screened.accepted] == [14_999.0]
    assert screened.rejected == {RejectReason.IMPLAUSIBLE_POWER: 2}
    assert len(screen_samples([reading(15_001.0)], NOW, max_node_watts=20_000).accepted) == 1


def test_a_sample_with_its_own_limit_is_bounded_by_it() -> None:
    gpu = {"source": "nvml", "device": "0", "limit": 700.0}
    screened = screen_samples([reading(760.0, **gpu), reading(1_050.0, **gpu), reading(1_051.0, **gpu)], NOW)
    assert [s.power_watts for s in screened.accepted] == [760.0, 1_050.0]  # a brief overshoot is real
    assert screened.rejected == {RejectReason.IMPLAUSIBLE_POWER: 1}
    assert power_bound(reading(1.0, limit=0.0), 15_000.0) == 15_000.0  # a zero limit is no limit


def test_a_bmc_reading_above_its_dcmi_limit_is_bounded_by_the_node_not_the_limit() -> None:
    """Regression: the BMC's DCMI limit bounded its readings like NVML's enforced GPU limit, but the BMC's capping
    cannot throttle GPUs, so an 8-GPU server above its DCMI limit had every wall reading refused."""
    screened = screen_samples([reading(6_500.0, limit=2_000.0), reading(15_001.0, limit=2_000.0)], NOW)
    assert [s.power_watts for s in screened.accepted] == [6_500.0]
    assert screened.rejected == {RejectReason.IMPLAUSIBLE_POWER: 1}  # the node bound still holds
    assert power_bound(reading(1.0, limit=12_000.0), 15_000.0) == 18_000.0  # a higher limit raises the bound


@pytest.mark.parametrize("watts", [0.0, 255.0, 4_095.0, 12_000.0])
def test_all_ones_values_of_narrower_registers_are_ordinary_readings(watts: float) -> None:
    assert len(screen_samples([reading(watts)], NOW).accepted) == 1


def test_the_first_reason_that_applies_is_counted_once() -> None:
    screened = screen_samples([reading(65_535.0, ahead_s=86400)], NOW)
    assert screened.rejected == {RejectReason.FUTURE_TIMESTAMP: 1}


def test_a_reading_out_of_range_is_left_out_but_a_bad_identity_still_raises():
    """A device's out-of-range value (TelemetrySample.reading, what the collectors build samples with)."""
    sample = TelemetrySample.reading(timestamp=NOW, node_id="n1", source=SourceKind.NVML, device_id="GPU-1",
                                     power_watts=-3.0, utilization=40.0, temperature=255.0)
    assert (sample.power_watts, sample.utilization, sample.temperature) == (None, 40.0, None)
    with pytest.raises(ValidationError):
        TelemetrySample.reading(timestamp=NOW, node_id="", source=SourceKind.NVML, power_watts=-3.0)
