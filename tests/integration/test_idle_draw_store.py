"""`autoscaler.idle_draw --from-store` reads the cluster's telemetry store actor, as `train_lstm --from-store` does."""

from __future__ import annotations

import json

import pandas as pd

from autoscaler.idle_draw import main


def test_the_idle_draw_is_measured_from_the_store(telemetry_store, capsys):
    from core.stores.remote import RemoteStore
    from core.stores.window import replay_samples

    now = pd.Timestamp.now(tz="UTC").floor("60s")
    samples = []
    for minute in range(30):  # 15 idle minutes at about 604 W, then 15 at work
        idle = minute < 15
        row = {"power_watts": 604.0 + minute % 3 * 0.5 if idle else 2100.0, "gpu_utilization": 0.0 if idle else 48.0}
        samples += replay_samples((now - pd.Timedelta(minutes=29 - minute)).to_pydatetime(), "stored-idle-gpu", row)
    RemoteStore().write(samples)
    assert main(["--from-store", "--since", "1d", "--node", "stored-idle-gpu", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    [node] = report["nodes"]
    assert node["basis"] == "accelerator" and node["idle_readings"] >= 14
    assert node["idle_watts"] == 604.5 and report["suggested_idle_power_watts"] == 604.5
    assert main(["--from-store", "--since", "1d", "--node", "stored-nowhere"]) == 2
    assert "no power readings of 'stored-nowhere' in the last 86400 s" in capsys.readouterr().err
