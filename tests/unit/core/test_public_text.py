"""What the open API may show of an event's or record's text: no internal address, path or traceback."""

from __future__ import annotations

import pytest

from core.public_text import error_text, without_addresses


@pytest.mark.parametrize(("text", "hidden"), [
    ("HTTPSConnectionPool(host='api.prod-k8s.corp.internal', port=6443): Max retries exceeded",
     ["api.prod-k8s", "6443"]),
    ("connect to fd00:10:96::1 failed", ["fd00:10:96::1"]),
    ("answer from [2001:db8::1]:443 was empty", ["2001:db8::1", "443"]),
    ("full form 2001:0db8:0000:0000:0000:0000:0000:0001 here", ["2001:0db8"]),
    ("gpu-node-1.cluster.local:9100 is down", ["gpu-node-1", "9100"]),
    ("the store at 10.0.0.5:8086 and http://influx.internal:8086/api", ["10.0.0.5", "influx.internal"]),
    ("cannot read /var/lib/kcloud/models/power/v3/meta.json", ["/var/lib"]),
    ("ConnectTimeoutError(<conn>, 'Connection to api.prod.corp timed out. (connect timeout=5.0)')", ["api.prod"]),
    ("Failed to resolve 'influx.corp.internal' ([Errno -2] Name or service not known)", ["influx.corp"]),
    ("kube-apiserver:6443 refused, localhost:8265 too", ["kube-apiserver", "8265"]),
    # the URL's match stopped at the `;`: the rest of the password was shown
    ("Ray dashboard at http://admin:p;w,d@dash.internal:8265 not reachable", ["admin", "p;w", "w,d", "dash.internal"]),
    # a bare in-cluster name, without a port or urllib3's words around it
    ("Connection refused to influxdb.kcloud.svc", ["influxdb", "kcloud"]),
    ("connect to influxdb.kcloud.svc.cluster.local failed", ["influxdb", "kcloud"]),
    # a one-label service name with a port (regression: kept whole)
    ("cannot reach influxdb:8086 (timed out)", ["influxdb", "8086"]),
    # a password with a `)` stopped the URL's match: its tail and the host were shown (regression)
    ("http://user:pa)ss@prom:9090/api failed", ["user", "ss@", "prom", "9090"]),
    ("http://user:pa)ss@prom/api failed", ["user", "ss@", "prom"]),  # without a port too
    ("Failed to connect to influxdb:8086.", ["influxdb", "8086"]),  # at a sentence's end
])
def test_addresses_are_cut_out(text, hidden):
    shown = without_addresses(text)
    assert "<address>" in shown or ".../" in shown
    for part in hidden:
        assert part not in shown


@pytest.mark.parametrize("text", [
    "scale_out 2 -> 4: forecast p80 peak bound over the next 20min 85.0% of the per-node budget",
    "cooldown, 120 s left; decided at 2026-12-04T11:48:58+00:00",
    "Serve kcloud/Model num_replicas -> 3; model v1.2",
    "ray::ServeReplica failed",
    "config.yaml:12: bad value; ratio 1.5:1; model v1.2:30; at 12:30:45",
    "trace x.internal.csv, model power_lstm.local, version 1.2.local",
])
def test_ordinary_text_is_left_alone(text):
    assert without_addresses(text) == text


def test_traceback_frames_are_left_out():
    text = ('ray::ServeReplica:power:PowerPredictor.forecast() (pid=123, ip=10.0.0.7)\n'
            'Traceback (most recent call last):\n  File "/app/deployments/power.py", line 3, in forecast\n'
            '    raise ValueError("bad window")\nValueError: bad window')
    shown = without_addresses(text)
    assert "File" not in shown and "raise" not in shown and "10.0.0.7" not in shown
    assert shown.endswith("ValueError: bad window")


class WrappedError(RuntimeError):
    """Like Ray's RayTaskError: its text is a remote traceback, `cause` the error raised."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__('ray::X() (pid=1, ip=10.0.0.7)\nTraceback (most recent call last):\n  File "/x.py", line 1')
        self.cause = cause


def test_error_text_is_the_wrapped_errors_first_line():
    assert error_text(WrappedError(ValueError("bad window\nmore"))) == "ValueError: bad window"
    assert error_text(TimeoutError()) == "TimeoutError"
    assert error_text(KeyError("gpu0")) == "KeyError: 'gpu0'"


def test_a_validation_error_says_the_field_and_the_reason():
    from pydantic import BaseModel

    class Window(BaseModel):
        steps: int

    with pytest.raises(ValueError) as raised:
        Window(steps="many")
    assert error_text(raised.value) == ("ValidationError: steps: Input should be a valid integer, unable to parse "
                                        "string as an integer")


def test_a_long_run_without_spaces_is_left_out_whole():
    """Regression (review): several patterns took time quadratic in a token's length (20,000 characters: seconds;
    100,000: about a minute), and an event page runs them on up to 1,000 reasons."""
    for token in ("a." + "a" * 20_000, "a-" * 10_000, "x" * 300):
        assert without_addresses(f"failed: {token} (retrying)") == "failed: <long text> (retrying)"
    assert without_addresses("at host-a:8080 " + "y" * 299) == "at <address> " + "y" * 299
