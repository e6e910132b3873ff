"""A real VictoriaMetrics (Debian `victoria-metrics`) as the InfluxDB line-protocol endpoint.

It accepts influxdb-client writes on /api/v2/write and stores each field as the series
`<measurement>_<field>` with the tags as labels (bucket, org and token are ignored); reads go through its
PromQL API. `-dedup.minScrapeInterval=1ms` keeps one sample per series and timestamp, as InfluxDB does
(without it VictoriaMetrics would keep a replayed sample twice).
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from pathlib import Path

from tests.factories import free_port
from tests.servers import ServerProcess, require_binary


class VictoriaMetrics(ServerProcess):
    ready_path = "/health"

    def __init__(self, workdir: Path, port: int | None = None, retention: str = "31d") -> None:
        binary = require_binary("victoria-metrics", "victoria-metrics")
        self.data_dir = Path(workdir) / "vmdata"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        argv = [binary, f"-httpListenAddr=127.0.0.1:{port}", f"-storageDataPath={self.data_dir}",
                f"-retentionPeriod={retention}", "-search.latencyOffset=0s", "-dedup.minScrapeInterval=1ms"]
        super().__init__(argv, port, Path(workdir) / "victoria-metrics.log")

    def force_flush(self) -> None:
        """Make just-written samples searchable now (otherwise about 1 s later)."""
        urllib.request.urlopen(self.url + "/internal/force_flush", timeout=10).read()

    def query(self, promql: str, at: float | None = None) -> list[dict]:
        params = {"query": promql, **({"time": str(at)} if at is not None else {})}
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}", timeout=30) as r:
            return json.loads(r.read())["data"]["result"]

    def query_until(self, promql: str, expect: int, at: float | None = None, timeout_s: float = 10.0) -> list[dict]:
        """Flush, then poll until the query returns `expect` series (new series show up after ~1 s)."""
        self.force_flush()
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.query(promql, at)
            if len(result) >= expect or time.monotonic() > deadline:
                return result
            time.sleep(0.1)

    def export(self, match: str) -> list[dict]:
        """Raw samples of the matching series: [{"metric": {...}, "values": [...], "timestamps": [ms...]}]."""
        query = urllib.parse.urlencode({"match[]": match})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{query}", timeout=30) as response:
            return [json.loads(line) for line in response.read().decode().splitlines() if line.strip()]
