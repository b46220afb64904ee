# ruff: noqa: E501, RUF001  (as for bench/run.py: report rows read better on one line)
"""The report of one ``bench/run.py`` run: its tables in Markdown, docs/benchmarks.md and
its chart. Hand-written sections of the previous report (KEPT) are carried over."""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

Runs = dict[tuple[str, str], list[dict[str, Any]]]

# Hand-written sections carried from one report to the next, in this order.
KEPT = (
    "## Targets not met",
    "## Before optimisation",
    "## Where the time goes",
    "## Memory",
    "## Reading the numbers",
    "## File transfer",  # bench/files.py's run, which bench/run.py does not make
)
CHART = "![benchmark chart](benchmarks.png)"
# A CPU figure read over less than this is coarser than 2 % (the clock tick is 10 ms).
PRECISE_CPU_SECONDS = 0.5
ZCHAT, MEMORY, PROXY, CLASSROOM = "zchat", "zchat :memory:", "libzmq proxy", "classroom TCP"
COUNTED = (MEMORY, ZCHAT, PROXY)  # the systems of the counting runs, as in the table


def fmt(values: list[float], digits: int = 0) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "–"
    med, low, high = statistics.median(values), min(values), max(values)
    if len(values) == 1:
        return f"{med:,.{digits}f}"
    return f"{med:,.{digits}f} ({low:,.{digits}f}–{high:,.{digits}f})"


def median_run(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    return sorted(rows, key=lambda row: row[key])[len(rows) // 2]


class Report:
    def __init__(
        self,
        runs: Runs,
        extra: dict[str, Any],
        names: list[str],
        skipped: list[str],
        args: argparse.Namespace,
    ) -> None:
        self.runs, self.extra, self.names, self.skipped, self.args = (
            runs, extra, names, skipped, args,
        )  # fmt: skip

    # --- what one figure is ---------------------------------------------------------------

    def values(self, key: str, name: str, get: Callable[[dict[str, Any]], float]) -> list[float]:
        return [get(row) for row in self.runs[(key, name)]]

    def median(self, key: str, name: str, get: Callable[[dict[str, Any]], float]) -> float:
        return statistics.median(self.values(key, name, get))

    def ratio(self, key: str, name: str, get: Callable[[dict[str, Any]], float]) -> float:
        """zchat's figure over the proxy's, medians of the same run."""
        return self.median(key, name, get) / max(1e-9, self.median(key, PROXY, get))

    def cpu(self, key: str, name: str, field: str) -> str:
        """A CPU figure, marked † if any of its runs read less than PRECISE_CPU_SECONDS."""
        cell = fmt(self.values(key, name, lambda r: r[field] or math.nan), 2)
        coarse = any(
            (r["broker_cpu_seconds"] or 0) < PRECISE_CPU_SECONDS for r in self.runs[(key, name)]
        )
        return cell + (" †" if coarse else "")

    def limit(self, key: str, name: str, field: str = "delivered_per_second") -> str:
        return str(median_run(self.runs[(key, name)], field)["limited_by"])

    # --- the broker alone -----------------------------------------------------------------

    def counting_table(self) -> list[str]:
        def per_room(row: dict[str, Any]) -> float:
            return float(row["delivered_per_second"]) / row["subscribers"]

        def p99(row: dict[str, Any]) -> float:
            return float(row["latency_ms"].get("p99", math.nan))

        def lost(key: str, name: str) -> str:
            return f"{sum(r['lost'] for r in self.runs[(key, name)]):,}"

        labels = ("zchat --db :memory:", "zchat (WAL file)", PROXY)
        head = "| | " + " | ".join(labels) + " | zchat :memory: ÷ proxy | zchat (WAL) ÷ proxy |"
        lines = [head, "|---" * (len(COUNTED) + 3) + "|"]
        rows: list[tuple[str, Callable[[str], str], Callable[[str], float] | None]] = [
            (
                "lines/s into one room, 1 subscriber, publisher as fast as the broker takes them",
                lambda n: fmt(self.values("count-capacity", n, per_room)),
                lambda n: self.ratio("count-capacity", n, per_room),
            ),
            ("lost in those runs", lambda n: lost("count-capacity", n), None),
            ("what limited them", lambda n: self.limit("count-capacity", n), None),
            (
                "broker CPU per line (µs), in those runs",
                lambda n: self.cpu("count-capacity", n, "broker_us_per_line"),
                lambda n: self.ratio("count-capacity", n, lambda r: r["broker_us_per_line"]),
            ),
            (
                "broker CPU per delivered message (µs), 2,000 lines/s to 100 subscribers",
                lambda n: self.cpu("count-fanout", n, "broker_us_per_delivered"),
                lambda n: self.ratio("count-fanout", n, lambda r: r["broker_us_per_delivered"]),
            ),
            ("broker busy (of a core) in those runs", lambda n: self.busy("count-fanout", n), None),
            ("lost in those runs", lambda n: lost("count-fanout", n), None),
            (
                "p99 latency (ms), 1,000 lines/s to 100 subscribers",
                lambda n: fmt(self.values("count-latency", n, p99), 2),
                lambda n: self.ratio("count-latency", n, p99),
            ),
            ("what limited them", lambda n: self.limit("count-latency", n), None),
        ]
        for label, cell, ratio in rows:
            cells = [cell(name) for name in COUNTED]
            ratios = [f"{ratio(name):.2f}×" if ratio else "" for name in (MEMORY, ZCHAT)]
            lines.append(f"| {label} | " + " | ".join(cells + ratios) + " |")
        return lines

    def busy(self, key: str, name: str) -> str:
        return fmt(self.values(key, name, lambda r: 100 * (r["broker_busy"] or 0.0))) + " %"

    # --- end to end -----------------------------------------------------------------------

    def fanout_table(self) -> list[str]:
        counts = [int(key.split("-")[1]) for key, _ in self.runs if key.startswith("fanout-")]
        counts = sorted(set(counts))
        lines = [
            "| system | "
            + " | ".join(f"1 → {n} msgs/s delivered" for n in counts)
            + " | lost (of all runs) |",
            "|---" * (len(counts) + 2) + "|",
        ]
        rate = "delivered_per_second"
        for name in self.names:
            cells = [fmt(self.values(f"fanout-{n}", name, lambda r: r[rate])) for n in counts]
            lost = sum(r["lost"] for n in counts for r in self.runs[(f"fanout-{n}", name)])
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {lost:,} |")
        lines += ["", "What limited each run (the median one):", ""]
        lines += ["| system | " + " | ".join(f"1 → {n}" for n in counts) + " |"]
        lines += ["|---" * (len(counts) + 1) + "|"]
        for name in self.names:
            cells = [self.limit(f"fanout-{n}", name) for n in counts]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return lines

    def tables(self) -> list[str]:
        """The two tables, as printed at the end of a run."""
        return [
            "",
            "Broker alone: counting subscribers (no decoding); what limited each is said",
            "",
            *self.counting_table(),
            "",
            "End to end: decoding subscribers, as real clients",
            "",
            *self.fanout_table(),
            "",
        ]

    # --- the document ---------------------------------------------------------------------

    def write(self, doc: Path) -> None:
        lines = [*self.header(), *self.counting_section(), *self.end_to_end_sections()]
        lines += [*self.decode_section(), *self.alone_section(), *self.targets()]
        lines += [*kept_sections(doc), CHART, ""]
        doc.write_text("\n".join(lines) + "\n", encoding="utf-8")
        draw(self, doc.with_suffix(".png"))

    def header(self) -> list[str]:
        info = Path("/proc/cpuinfo").read_text()
        cpu = info.split("model name")[1].split("\n")[0].strip(": \t")
        flags = "".join(f" --{f}" for f in ("quick", "smoke") if getattr(self.args, f))
        before, after = self.extra["load"]
        lines = [
            "# Benchmarks",
            "",
            "Two kinds of run. **Broker alone**: subscribers that only count frames (and read",
            "each line's send time with one regular expression), so that what is measured is",
            "the broker: zchat's, with `--db :memory:` and with its history in a file (WAL), and",
            "libzmq's own `zmq.proxy(PULL, PUB)` in C, the limit of this architecture. **End to",
            "end**: every subscriber decodes every message, as a real client must, against",
            "zchat as shipped, the proxy, the classroom design it replaces (a threaded TCP",
            "server that loops `send` over its client list, `bench/classroom_server.py`) and",
            "Redis pub/sub. Loss is reported next to every throughput, and each run says what",
            "limited it: a process busy all along (its CPU over the run, of one core), every",
            "core busy, or the rate asked for.",
            "",
            f"Machine: {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
            f"pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}, {platform.platform()}.",
            f"Command: `python bench/run.py --reps {self.args.reps}{flags}` at commit "
            f"{self.extra['commit']} ({self.extra['date']}). Median (min–max) of "
            f"{self.args.reps} runs, systems alternated. Load average (1 min) {before} before "
            f"the run, {after} after it; other processes took {self.others():.1f} of the "
            f"{os.cpu_count()} cores (median over the runs, from /proc/stat).",
            "",
        ]
        if self.skipped:
            lines += [f"Not measured: {', '.join(self.skipped)}.", ""]
        return lines

    def others(self) -> float:
        """How much of the machine other processes took during the runs (the median)."""
        shares = [
            row["machine_cores"]
            - (row["broker_busy"] or 0.0)
            - row["publisher_cores"]
            - row["subscriber_cores"]
            for rows in self.runs.values()
            for row in rows
        ]
        return max(0.0, statistics.median(shares)) if shares else 0.0

    def counting_section(self) -> list[str]:
        return [
            "## Broker alone: counting subscribers",
            "",
            "100-byte lines into one room. The proxy's publisher sends what zchat's broker",
            "would publish; zchat's publisher is a joined client sending `say`. Broker CPU is",
            "its process's (all threads) from /proc, over the sending and the delivery;",
            "† marks a figure read over less than 0.5 s of CPU (the 10 ms tick is then more",
            "than 2 % of it). Ratios are zchat's median over the proxy's.",
            "",
            *self.counting_table(),
            "",
        ]

    def end_to_end_sections(self) -> list[str]:
        lines = ["## End to end: 1 publisher → N decoding subscribers, 100-byte texts", ""]
        lines += [*self.fanout_table(), ""]
        lines += ["## Broker CPU per delivered message (µs), 1 → 100, decoding subscribers", ""]
        lines += ["| system | µs of server CPU per delivered message |", "|---|---|"]
        for name in self.names:
            lines.append(f"| {name} | {self.cpu('fanout-100', name, 'broker_us_per_delivered')} |")
        stall = [r["sent"] for r in self.runs[("stalled", ZCHAT)]]
        lines += ["", "## One subscriber of 100 stalled (SIGSTOP once warmed up)", ""]
        lines += [
            f"{max(stall):,} lines (more for the classroom server, so that the stall outgrows "
            "the kernel's socket buffers, about 4 MB per connection on loopback, within the run).",
            "",
            "| system | msgs/s to the 99 others | of its unstalled 1 → 100 | lines sent (of all asked) |",
            "|---|---|---|---|",
        ]
        for name in self.names:
            stalled = self.median("stalled", name, lambda r: r["delivered_per_second"])
            free = self.median("fanout-100", name, lambda r: r["delivered_per_second"])
            sent = sum(r["sent"] for r in self.runs[("stalled", name)])
            cell = fmt(self.values("stalled", name, lambda r: r["delivered_per_second"]))
            lines.append(f"| {name} | {cell} | {stalled / max(1e-9, free):.2f}× | {sent:,} |")
        lines += ["", "## Latency at 1,000 msgs/s, 100 decoding subscribers (end to end, ms)", ""]
        lines += ["| system | p50 | p99 | max | lost | limited by |", "|---|---|---|---|---|---|"]
        for name in self.names:
            rows = self.runs[("latency", name)]
            cells = [
                fmt([r["latency_ms"].get(k, math.nan) for r in rows], 2)
                for k in ("p50", "p99", "max")
            ]
            lost = sum(r["lost"] for r in rows)
            limit = self.limit("latency", name)
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {lost:,} | {limit} |")
        return [*lines, ""]

    def decode_section(self) -> list[str]:
        costs = self.extra["decode"]
        lines = [
            "## Client decode: µs per received room event",
            "",
            "`python bench/decode.py`: pre-encoded `message` events of one room, in order,",
            "fed in-process through each client's receive path (no sockets).",
            "",
            "| path | µs per event |",
            "|---|---|",
        ]
        lines += [f"| {path} | {us:.2f} |" for path, us in costs.items()]
        return [*lines, ""]

    def alone_section(self) -> list[str]:
        joins, jl = self.extra["joins"], self.extra["join_latency"]
        return [
            "## zchat alone",
            "",
            f"- {joins['clients']:,} clients joining at once: all joined in {joins['seconds']:.2f} s; "
            f"broker RSS {joins['rss_mib']:.0f} MiB; broker threads {joins['threads_before']} "
            f"before, {joins['threads_after']} with {joins['clients']:,} joined.",
            f"- `join()` on an idle broker, {jl['count']} in a row: p50 {jl['p50']:.2f} ms, "
            f"p99 {jl['p99']:.2f} ms, max {jl['max']:.2f} ms.",
            f"- `zchat --help`: {self.extra['help_seconds']:.3f} s (median of 10).",
            "",
        ]

    def targets(self) -> list[str]:
        def ratio(measured: float, other: float) -> float:
            """``measured / other``; NaN when ``other`` is 0 (nothing to compare with)."""
            return measured / other if other else math.nan

        def rate(key: str) -> Callable[[str], float]:
            return lambda name: self.median(key, name, lambda r: r["delivered_per_second"])

        def cpu(key: str, name: str) -> float:
            return self.median(key, name, lambda r: r["broker_us_per_delivered"])

        def p99(key: str, name: str) -> float:
            return self.median(key, name, lambda r: r["latency_ms"].get("p99", math.inf))

        capacity = rate("count-capacity")
        joins, jl, help_s = (
            self.extra["joins"],
            self.extra["join_latency"],
            self.extra["help_seconds"],
        )
        # (target, measured, met): ratios are zchat's over the other's
        checks: list[tuple[str, str, bool]] = []
        for label, value, need, more in [
            ("broker alone: zchat :memory: ≥ 0.6× proxy lines/s, 1 subscriber", ratio(capacity(MEMORY), capacity(PROXY)), 0.6, True),
            ("broker alone: zchat (WAL file) ≥ 0.4× proxy lines/s, 1 subscriber", ratio(capacity(ZCHAT), capacity(PROXY)), 0.4, True),
            ("broker alone: CPU per delivered message at 2,000 lines/s to 100 ≤ 1.3× proxy", ratio(cpu("count-fanout", ZCHAT), cpu("count-fanout", PROXY)), 1.3, False),
            ("broker alone: p99 latency at 1,000 lines/s to 100 ≤ 1.5× proxy", ratio(p99("count-latency", ZCHAT), p99("count-latency", PROXY)), 1.5, False),
            ("end to end: zchat ≥ 0.5× proxy at 100 subscribers", ratio(rate("fanout-100")(ZCHAT), rate("fanout-100")(PROXY)), 0.5, True),
            ("end to end: zchat ≥ 0.25× proxy at 1 subscriber", ratio(rate("fanout-1")(ZCHAT), rate("fanout-1")(PROXY)), 0.25, True),
            ("end to end: zchat ≥ 5× classroom at 10 subscribers", ratio(rate("fanout-10")(ZCHAT), rate("fanout-10")(CLASSROOM)), 5, True),
            ("end to end: zchat ≥ 5× classroom at 100 subscribers", ratio(rate("fanout-100")(ZCHAT), rate("fanout-100")(CLASSROOM)), 5, True),
            ("end to end: zchat CPU ≤ 2× proxy per delivered message at 100", ratio(cpu("fanout-100", ZCHAT), cpu("fanout-100", PROXY)), 2, False),
        ]:  # fmt: skip
            if math.isnan(value):  # a figure was 0: a run too short for the clock tick
                checks.append((label, "not measured (a figure was 0: too short a run)", False))
                continue
            met = value >= need if more else value <= need
            checks.append((label, f"{value:.2f} (need {'≥' if more else '≤'} {need})", met))
        stalled = self.median("stalled", ZCHAT, lambda r: r["delivered_per_second"])
        stall = ratio(stalled, rate("fanout-100")(ZCHAT))
        worst_decode = max(self.extra["decode"].values())
        checks += [
            ("zchat: 99 others keep ≥ 0.9× with 1 of 100 stalled", f"{stall:.2f}", stall >= 0.9),
            ("client decode ≤ 3 µs per room event (slowest path)", f"{worst_decode:.2f} µs", worst_decode <= 3),
            ("latency p99 ≤ 2 ms at 1,000 msgs/s, 100 decoding subscribers", f"{p99('latency', ZCHAT):.2f} ms", p99("latency", ZCHAT) <= 2),
            (f"{joins['clients']:,} joins within 5 s", f"{joins['seconds']:.2f} s", joins["seconds"] <= 5),
            (f"broker RSS ≤ 150 MiB with {joins['clients']:,} joined", f"{joins['rss_mib']:.0f} MiB", joins["rss_mib"] <= 150),
            ("broker thread count constant", f"{joins['threads_before']} → {joins['threads_after']}", joins["threads_before"] == joins["threads_after"]),
            ("`join()` p99 ≤ 20 ms", f"{jl['p99']:.2f} ms", jl["p99"] <= 20),
            ("`zchat --help` ≤ 0.3 s", f"{help_s:.3f} s", help_s <= 0.3),
        ]  # fmt: skip
        lines = ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
        lines += [
            f"| {label} | {value} | {'yes' if met else 'no'} |" for label, value, met in checks
        ]
        return [*lines, ""]


def kept_sections(doc: Path) -> list[str]:
    """The hand-written sections (KEPT) of the report being replaced, in KEPT's order."""
    if not doc.exists():
        return []
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in doc.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            current = found.setdefault(line, []) if line.startswith(KEPT) else None
        elif line.startswith("!["):  # the chart ends the report
            current = None
        if current is not None:
            current.append(line)
    lines: list[str] = []
    for kept in KEPT:
        for head, body in found.items():
            if head.startswith(kept):
                lines += [*"\n".join(body).rstrip().splitlines(), ""]
    return lines


def draw(report: Report, path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        print(f"{path} not drawn: matplotlib is not installed (pip install -e '.[bench]')")
        return

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (alone, e2e) = plt.subplots(1, 2, figsize=(11, 4.5))
    colour = {ZCHAT: "C0", PROXY: "C1", CLASSROOM: "C2", "Redis pub/sub": "C3", MEMORY: "C4"}
    for i, name in enumerate(COUNTED):
        value = report.median("count-capacity", name, lambda r: r["delivered_per_second"])
        alone.bar(i, value, 0.6, color=colour[name])
        alone.annotate(f"{value:,.0f}", (i, value), ha="center", va="bottom")
    alone.set_xticks(range(len(COUNTED)))
    alone.set_xticklabels(["zchat --db :memory:", "zchat (WAL file)", PROXY])
    alone.set_ylabel("lines/s into one room, 1 subscriber")
    alone.set_title("Broker alone: counting subscribers")
    counts = sorted({int(k.split("-")[1]) for k, _ in report.runs if k.startswith("fanout-")})
    width = 0.8 / len(report.names)
    for i, name in enumerate(report.names):
        values = [
            report.median(f"fanout-{n}", name, lambda r: r["delivered_per_second"]) for n in counts
        ]
        xs = [x + i * width for x in range(len(counts))]
        e2e.bar(xs, values, width, label=name, color=colour.get(name))
    e2e.set_xticks([x + width * (len(report.names) - 1) / 2 for x in range(len(counts))])
    e2e.set_xticklabels([f"1 → {n}" for n in counts])
    e2e.set_yscale("log")
    e2e.set_ylabel("messages delivered per second (log)")
    e2e.set_title("End to end: every message decoded")
    e2e.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")
