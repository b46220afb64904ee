"""`zchat bench` and the harness in bench/: short real runs, so that they keep working.
Their numbers are checked by the harness's own report, not here (timing in tests is
flaky): these tests check what is reported, never how fast anything was."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from support import Proc, child_env, zchat_command
from zchat import protocol as p
from zchat.bench import LINE_STAMP, STAMP_DIGITS, WARMUP, Publisher, stamp_of

BENCH = Path(__file__).resolve().parent.parent / "bench"


def run_bench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        zchat_command("bench", *args),
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=timeout,
        check=False,
    )


def run_script(script: str, *args: str) -> str:
    """Run bench/``script`` with ``args``; its stdout (CalledProcessError if it fails)."""
    result = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
        check=True,
    )
    return result.stdout


def test_bench_spawns_a_broker_and_reports_every_figure() -> None:
    result = run_bench("--spawn", "-s", "3", "-n", "300", "--size", "80", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["publishers"], report["subscribers"], report["size"]) == (1, 3, 80)
    assert report["count_only"] is False
    assert report["sent"] == 300
    assert report["expected"] == 900
    assert report["delivered"] + report["lost"] == 900
    assert report["lost"] == 0  # a few hundred lines fit every queue on the way
    assert report["delivered_per_second"] > 0
    latency = report["latency_ms"]
    assert set(latency) == {"p50", "p90", "p99", "max"}
    assert 0 <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    # a broker of its own: its CPU is read too, and what limited the run is said
    assert report["broker_cpu_seconds"] >= 0
    assert report["broker_us_per_line"] == pytest.approx(1e6 * report["broker_cpu_seconds"] / 300)
    assert report["limited_by"]


def test_bench_count_only_counts_every_line_without_decoding() -> None:
    result = run_bench("--spawn", "--count-only", "-s", "3", "-n", "300")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "counting subscribers (no decoding)" in out
    assert re.search(r"^delivered +900 of 900 ", out, re.M), out
    assert re.search(r"^lost +0 \(0\.00%\)", out, re.M), out
    assert "broker CPU" in out
    assert "µs per line" in out
    assert "limited by " in out


def test_a_publishers_lines_carry_their_send_time_where_both_subscribers_find_it() -> None:
    sent: list[list[bytes]] = []

    def encode(text: str) -> list[bytes]:
        return p.encode_client(p.Say("a" * 32, "bench", text))

    publisher = Publisher(sent.append, encode, 7, 100)
    publisher.say("warmup")
    publisher.line()
    publisher.line()
    warmup, first, second = (p.decode_client(frames) for frames in sent)
    assert isinstance(warmup, p.Say)
    assert stamp_of(warmup.text) == WARMUP
    for frames, say in ((sent[1], first), (sent[2], second)):
        assert isinstance(say, p.Say)
        assert len(say.text.encode()) == 100
        assert say.text[STAMP_DIGITS:].startswith(" 007 ")
        found = LINE_STAMP.search(frames[-1])  # what a counting subscriber reads
        assert found is not None
        assert int(found[1]) == stamp_of(say.text) > 0  # what a decoding one reads
    assert isinstance(first, p.Say)
    assert isinstance(second, p.Say)
    assert stamp_of(first.text) <= stamp_of(second.text)


def test_a_publisher_refuses_frames_that_lose_the_send_time() -> None:
    with pytest.raises(ValueError, match="exactly once"):
        Publisher(lambda _: None, lambda text: [b"no time here"], 0, 100)


def test_bench_against_no_broker_fails_clearly() -> None:
    result = run_bench("--port", "1", "-s", "1", "-n", "1", timeout=60)
    assert result.returncode == 1
    assert "no answer from the broker at 127.0.0.1:1" in result.stderr


def test_bench_against_a_limited_broker_says_why_lines_are_lost(
    broker_proc: tuple[Proc, int],
) -> None:
    _, port = broker_proc  # the default flood limit: 50 at once, then 20 a second
    result = run_bench("--port", str(port), "-s", "1", "-n", "500", "--size", "40")
    assert result.returncode == 0, result.stderr
    assert "lost" in result.stdout
    assert "default flood limit (20 a second per session)" in result.stderr
    assert "--rate 0" in result.stderr


@pytest.mark.timeout(400)
def test_the_harness_prints_both_tables_and_writes_the_report(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    kept = "## Where the time goes\n\nWritten by hand, and kept.\n"
    doc.write_text(f"# Benchmarks\n\n## Old table\n\n| gone |\n\n{kept}", encoding="utf-8")
    result = subprocess.run(
        # its own raw file: the default one in the temporary folder is a real run's
        [
            sys.executable,
            str(BENCH / "run.py"),
            "--smoke",
            "--reps",
            "1",
            "--doc",
            str(doc),
            "--raw",
            str(tmp_path / "runs.json"),
        ],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=380,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    alone = out.index("Broker alone: counting subscribers")
    end_to_end = out.index("End to end: decoding subscribers")
    assert alone < end_to_end
    for system in ("zchat --db :memory:", "zchat (WAL file)", "libzmq proxy"):
        assert f" {system} |" in out[alone:end_to_end]
    assert "| lines/s into one room, 1 subscriber" in out[alone:end_to_end]
    assert "| broker CPU per line (µs)" in out[alone:end_to_end]
    assert "| p99 latency (ms), 1,000 lines/s to 100 subscribers" in out[alone:end_to_end]
    assert out[alone:end_to_end].count("| what limited them |") == 2
    assert "What limited each run" in out[end_to_end:]
    report = doc.read_text(encoding="utf-8")
    for heading in (
        "## Broker alone: counting subscribers",
        "## End to end: 1 publisher → N decoding subscribers",
        "## Client decode: µs per received room event",
        "## Targets",
    ):
        assert heading in report
    assert "| gone |" not in report
    assert kept in report


def test_the_decode_benchmark_prints_a_figure_per_path() -> None:
    stdout = run_script("decode.py", "--events", "3000")
    lines = stdout.splitlines()
    paths = ("decode_server alone", "blocking Client", "AsyncClient")
    for line, path in zip(lines, paths, strict=True):
        assert "µs per event" in line
        assert path in line
        assert float(line.split()[0]) > 0


def test_the_markup_benchmark_prints_a_figure_per_text() -> None:
    stdout = run_script("markup.py", "--count", "3")
    lines = stdout.splitlines()
    texts = ("plain line", "bold, code, mention and link", "python code block, 40 lines")
    for line, text in zip(lines, texts, strict=True):
        assert "µs per message" in line
        assert text in line
        assert float(line.split()[0]) > 0
    assert "Pygments' lexing alone" in lines[2]


def test_the_terminal_benchmark_keeps_every_key_under_a_flood() -> None:
    """A smoke run: a second of 200 lines a second, a few keys; the line typed comes back
    whole (else it exits non-zero), and it says how many keys were lost."""
    stdout = run_script("terminal.py", "--seconds", "1", "--rate", "200")
    assert re.search(r"keys typed, 0 not shown within 5 s; a key shown after: p50", stdout)


def test_the_broker_profile_shows_its_three_views() -> None:
    out = run_script("profile_broker.py", "--lines", "600", "--seconds", "1")
    assert "BrokerRules.on_inbound whole, :memory:" in out
    assert "2. cProfile of BrokerRules.on_inbound" in out
    assert "3. Through sockets" in out
    assert "µs per line" in out


@pytest.mark.timeout(200)
def test_the_memory_run_reports_per_session_and_per_room() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH / "memory.py"), "--sessions", "40", "--rooms-per-client", "2"],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "with 40 sessions" in result.stdout
    assert "KiB per session" in result.stdout
    assert "KiB per room of one member" in result.stdout


# What the file benchmark prints: a row of each table, a line of the targets.
FILE_ROWS = (
    "| writing a new file, no network",
    "| plain TCP copy (Python sockets) |",
    "| bare pyzmq DEALER/ROUTER, credit-based |",
    "| zchat upload, Alice → broker (`send_file`) |",
    "| zchat download, broker → Bob (`get_file`) |",
    "| upload |",
    "| download |",
    "| quiet, before the transfers |",
    "| during the upload |",
    "| during the download |",
    "| zchat upload ≥ 0.5\N{MULTIPLICATION SIGN} bare pyzmq |",
    "| zchat download ≥ 0.5\N{MULTIPLICATION SIGN} bare pyzmq |",
    "| zchat upload ≥ 0.25\N{MULTIPLICATION SIGN} plain TCP copy |",
    "| zchat download ≥ 0.25\N{MULTIPLICATION SIGN} plain TCP copy |",
    "| broker RSS grows ≤ 64 MiB",
    "| client RSS grows ≤ 64 MiB",
    "| chat line p50 during the upload ≤ 2\N{MULTIPLICATION SIGN} quiet p50 |",
    "| chat line p50 during the download ≤ 2\N{MULTIPLICATION SIGN} quiet p50 |",
)


def test_the_file_benchmark_prints_every_row_and_writes_its_figures(tmp_path: Path) -> None:
    """A smoke run at 4 MiB: every row printed, every figure in the JSON, and nothing
    left behind in the folder it was given."""
    out = tmp_path / "files.json"
    stdout = run_script(
        "files.py", "--size-mib", "4", "--reps", "1", "--quiet-seconds", "0.5",
        "--folder", str(tmp_path), "--json", str(out),
    )  # fmt: skip
    for row in FILE_ROWS:
        assert row in stdout, row
    found = json.loads(out.read_text())
    assert found["config"]["size_mib"] == 4
    assert found["config"]["filesystem"]
    rates = found["mb_per_s"]
    assert [len(rates[name]) for name in ("tcp", "bare", "upload", "download")] == [1, 1, 1, 1]
    assert len(rates["page_cache"]) == 4  # before each of the four transfers
    assert all(rate > 0 for values in rates.values() for rate in values)
    assert found["latency_ms"]["quiet"]["count"] > 0
    assert len(found["checks"]) == 8
    assert [path.name for path in tmp_path.iterdir()] == ["files.json"]


def test_bench_files_runs_on_a_broker_of_its_own() -> None:
    result = run_bench("--files", "--file-size", "2")
    assert result.returncode == 0, result.stderr
    for row in FILE_ROWS:
        assert row in result.stdout, row
    assert "| 2 MiB over loopback |" in result.stdout
    assert "making 2 MiB of random bytes" in result.stderr


def test_the_login_benchmark_prints_its_tables_and_accounts_for_every_attempt(
    tmp_path: Path,
) -> None:
    """A smoke run: 5 logins in a row, then each attack for 2 s. Every table and target
    row is printed, and every attempt the guesser sent got an answer it counted."""
    out = tmp_path / "login.json"
    stdout = run_script("login.py", "--seconds", "2", "--logins", "5", "--json", str(out))
    for row in (
        "| logins in a row | p50 | p90 | p99 | max | refused |",
        "| one-address (1 address) |",
        "| many-addresses (50 addresses) |",
        "| attack | chat p50 quiet → attack (lines) |",
        "| idle: login p99 ≤ 300 ms |",
        "| one-address: no loop turn over 50 ms |",
        "| many-addresses: carol logs in each time |",
    ):
        assert row in stdout, row
    idle, *attacks = json.loads(out.read_text())["rows"]
    assert idle["logins"]["tried"] == 5
    assert [attack["run"] for attack in attacks] == ["one-address", "many-addresses"]
    for attack in attacks:
        answers = attack["answers"]
        assert answers["sent"] > 0
        # each attempt counted once more, by its answer's code ("none": unanswered)
        assert sum(answers.values()) == 2 * answers["sent"]
        assert attack["quiet"]["lines"] > 0
        assert attack["attack"]["lines"] > 0
