"""Past jobs from a CSV: every value checked, and errors that name the line and the column."""

from __future__ import annotations

import pandas as pd
import pytest

from training.cost.catalog import RECORD_COLUMNS, generate_job_records, load_catalog
from training.cost.job_records import load_job_records
from training.cost.schema import COMPONENTS

CATALOG = load_catalog()


@pytest.fixture
def records(tmp_path):
    frame = generate_job_records(20, seed=1)
    path = tmp_path / "jobs.csv"
    frame.to_csv(path, index=False)
    return frame, path


def test_generated_records_load_as_written(records):
    frame, path = records
    loaded = load_job_records(path, CATALOG)
    assert list(loaded.columns) == list(RECORD_COLUMNS) and len(loaded) == len(frame)


def test_a_cost_that_is_not_the_sum_of_its_components_names_the_line(records):
    """Regression: a bill with an un-itemised fee (cost 20 % over its parts) was accepted; the model learns the
    components, so its estimates came out low, at the edge of intervals fitted to another target."""
    frame, path = records
    frame.loc[3, "cost"] *= 1.2
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"jobs.csv line 5: column cost: .* is not the sum of compute, gpu"):
        load_job_records(path, CATALOG)
    frame.loc[3, "cost"] /= 1.2
    frame.loc[3, "cost"] *= 1.005  # rounding stays within 1 %
    frame.loc[4, list(COMPONENTS)] = [0.0, 0.0, 0.0, 0.0, 0.0]  # a one-minute job's parts rounded to cents
    frame.loc[4, "cost"] = 0.01
    frame.to_csv(path, index=False)
    load_job_records(path, CATALOG)


def test_line_numbers_count_blank_lines_and_trailing_commas_shift_nothing(records):
    """A blank line shifted every later line number by one; a trailing comma on every row shifted every column
    (pandas took the first as the index), refused with a misleading message or, worse, read shifted."""
    frame, path = records
    frame.loc[3, "cpu_cores"] = -1  # line 5
    lines = frame.to_csv(index=False).splitlines()
    path.write_text("\n".join(lines[:3] + [""] + lines[3:]) + "\n")  # a blank line 4: the bad row is line 6
    with pytest.raises(ValueError, match=r"jobs.csv line 6: column cpu_cores: '-1"):
        load_job_records(path, CATALOG)
    frame.loc[3, "cpu_cores"] = 4
    lines = frame.to_csv(index=False).splitlines()
    path.write_text("\n".join([lines[0]] + [line + "," for line in lines[1:]]) + "\n")
    loaded = load_job_records(path, CATALOG)
    assert loaded["cost"].tolist() == pytest.approx(frame["cost"].tolist())


def test_gpu_type_none_is_accepted_only_without_gpus(records):
    frame, path = records
    cpu_only, with_gpus = frame.index[frame["gpu_count"] == 0][0], frame.index[frame["gpu_count"] > 0][0]
    frame.loc[cpu_only, "gpu_type"] = "none"  # how the model itself names no accelerator
    frame.to_csv(path, index=False)
    assert pd.isna(load_job_records(path, CATALOG).loc[cpu_only, "gpu_type"])  # as a blank one
    frame.loc[with_gpus, "gpu_type"] = "none"
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError, match=f"line {with_gpus + 2}: column gpu_type: 'none' is not in the price catalog"):
        load_job_records(path, CATALOG)


@pytest.mark.parametrize(("column", "value", "reason"), [
    ("cpu_cores", 1e308, "to 4096"), ("memory_gb", 1e6, "to 65536"), ("storage_gb", 2e6, "up to 1,000,000"),
    ("avg_power_watts", 5e6, "watts up to 1,000,000"), ("duration_hours", 1e-6, "from 1/3600"),
    ("cpu_cores", 0.0005, "from 0.001"), ("memory_gb", 5e-324, "from 0.001")])
def test_a_record_beyond_what_a_request_may_ask_is_refused_naming_the_line(records, column, value, reason):
    """Regression: one record of 1e308 cores (or millicores written as cores) was accepted: its expected power
    overflowed and the fitted model's error doubled, its confidence for ordinary jobs fell from 0.95 to 0.11."""
    frame, path = records
    frame.loc[2, column] = value
    frame.to_csv(path, index=False)
    with pytest.raises(ValueError, match=rf"jobs.csv line 4: column {column}: .* is not .*{reason}"):
        load_job_records(path, CATALOG)
