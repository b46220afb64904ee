"""`zchat bench`: a short real run, so that the command keeps working. Its numbers are
checked by the benchmark harness in bench/, not here (timing in tests is flaky)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support import Proc, child_env, zchat_command

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_bench_spawns_a_broker_and_reports_every_figure() -> None:
    result = subprocess.run(
        zchat_command("bench", "--spawn", "-s", "3", "-n", "300", "--size", "80", "--json"),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["publishers"], report["subscribers"], report["size"]) == (1, 3, 80)
    assert report["sent"] == 300
    assert report["expected"] == 900
    assert report["delivered"] + report["lost"] == 900
    assert report["lost"] == 0  # a few hundred lines fit every queue on the way
    assert report["delivered_per_second"] > 0
    latency = report["latency_ms"]
    assert set(latency) == {"p50", "p90", "p99", "max"}
    assert 0 <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]


def test_bench_against_no_broker_fails_clearly() -> None:
    result = subprocess.run(
        zchat_command("bench", "--port", "1", "-s", "1", "-n", "1"),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "no answer from the broker at 127.0.0.1:1" in result.stderr


def test_bench_against_a_limited_broker_says_why_lines_are_lost(
    broker_proc: tuple[Proc, int],
) -> None:
    _, port = broker_proc  # the default flood limit: 50 at once, then 20 a second
    result = subprocess.run(
        zchat_command("bench", "--port", str(port), "-s", "1", "-n", "500", "--size", "40"),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "lost" in result.stdout
    assert "default flood limit (20 a second per session)" in result.stderr
    assert "--rate 0" in result.stderr


def test_the_decode_benchmark_prints_a_figure_per_path() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH / "decode.py"), "--events", "3000"],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
        check=True,
    )
    lines = result.stdout.splitlines()
    paths = ("decode_server alone", "blocking Client", "AsyncClient")
    for line, path in zip(lines, paths, strict=True):
        assert "µs per event" in line
        assert path in line
        assert float(line.split()[0]) > 0
