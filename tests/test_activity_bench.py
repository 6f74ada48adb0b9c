"""`deepz bench activity` compares the devices' readouts of the same frames (the GPU check's correctness test)."""

import json

from typer.testing import CliRunner

from deepz.cli import app


def test_bench_activity_reports_agreement_between_devices(tmp_path):
    out = tmp_path / "activity.json"
    result = CliRunner().invoke(app, [
        "bench", "activity", "--json", str(out), "--size", "64", "--neurons", "12", "--frames", "6",
        "--device", "cpu", "--device", "cpu:0",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    agreement = json.loads(out.read_text())["agreement"]["cpu_vs_cpu:0"]
    assert agreement["same_reference"] is True
    assert agreement["max_abs_difference_rel"] < 1e-6
    assert agreement["median_trace_r"] > 0.999999
