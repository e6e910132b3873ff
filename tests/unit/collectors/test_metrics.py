"""LossCounter: every lost sample counted, warnings at once for a new reason and then at most once a minute."""

from __future__ import annotations

import logging

from collectors.metrics import LossCounter


def test_losses_are_counted_and_their_warnings_rate_limited(caplog):
    clock = [1000.0]
    losses = LossCounter("rejected", "n1", clock=lambda: clock[0])
    with caplog.at_level(logging.WARNING, logger="collectors.metrics"):
        losses.add("bmc_sentinel", 1, "e.g. 65535 W")
        losses.add("bmc_sentinel", 2)
        losses.add("future_timestamp", 4)
        losses.add("bmc_sentinel", 0)
        assert len(caplog.records) == 2  # the first of each reason at once
        clock[0] += 30
        losses.report()
        assert len(caplog.records) == 2
        clock[0] += 31
        losses.report()
        assert len(caplog.records) == 3 and "2 sample(s) rejected, reason bmc_sentinel" in caplog.text
        losses.add("bmc_sentinel", 5)
        losses.report(force=True)
    assert losses.counts == {"bmc_sentinel": 8, "future_timestamp": 4}
    assert caplog.records[-1].getMessage().startswith("telemetry n1: 5 sample(s) rejected, reason bmc_sentinel")
    assert "e.g. 65535 W" in caplog.records[0].getMessage()


def test_a_metric_counter_outside_ray_is_harmless():
    losses = LossCounter("dropped", "n1", metric="kcloud_telemetry_dropped_samples_total")
    losses.add("spill_cap", 3)
    assert losses.counts == {"spill_cap": 3}
