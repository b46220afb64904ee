"""The figures of a file benchmark: the tables it prints (Markdown, as
docs/benchmarks.md shows them), the targets met or not, and the JSON of every figure.
Rates are in MB/s (10^6 bytes a second); a figure of several repetitions is their
median, with the lowest and the highest in brackets."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from zchat.bench import percentiles
from zchat.filebench.config import (
    BARE_SHARE,
    LATENCY_RATIO,
    RSS_GROWTH_MIB,
    TCP_SHARE,
    FileBenchConfig,
)
from zchat.filebench.copies import Copy
from zchat.filebench.peers import Moved


@dataclass(frozen=True)
class Phase:
    """One zchat transfer: its times, the broker's and the client's CPU seconds and RSS
    growth over it, and the latencies (ms) of the chat lines sent meanwhile."""

    moved: Moved
    broker_cpu: float
    client_cpu: float
    broker_rss_mib: float
    client_rss_mib: float
    latencies: tuple[float, ...] = ()

    @property
    def seconds(self) -> float:
        return self.moved.end - self.moved.start


@dataclass(frozen=True)
class ZchatRep:
    upload: Phase
    download: Phase
    quiet: tuple[float, ...]  # the chat's latencies (ms) before either transfer


@dataclass(frozen=True)
class Check:
    target: str
    measured: str
    met: bool | None  # None: not measured (no chat line fell in so short a transfer)


def spread(values: list[float], digits: int = 0) -> str:
    """The median, and (lowest–highest) when there are several."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "–"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:,.{digits}f}"
    return f"{med:,.{digits}f} ({min(values):,.{digits}f}–{max(values):,.{digits}f})"


def ms(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.2f}"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


@dataclass
class FileBenchResult:
    config: FileBenchConfig
    folder: str
    filesystem: str
    page_cache: list[float] = field(default_factory=list)  # seconds to write a new file
    tcp: list[Copy] = field(default_factory=list)
    bare: list[Copy] = field(default_factory=list)
    zchat: list[ZchatRep] = field(default_factory=list)

    def mb_per_s(self, seconds: float) -> float:
        return self.config.size / max(seconds, 1e-9) / 1e6

    def rates(self) -> dict[str, list[float]]:
        """MB/s of each repetition, by transfer: page_cache (writing a new file, no
        network), tcp, bare, upload, download."""
        return {
            "page_cache": [self.mb_per_s(seconds) for seconds in self.page_cache],
            "tcp": [self.mb_per_s(c.seconds) for c in self.tcp],
            "bare": [self.mb_per_s(c.seconds) for c in self.bare],
            "upload": [self.mb_per_s(z.upload.seconds) for z in self.zchat],
            "download": [self.mb_per_s(z.download.seconds) for z in self.zchat],
        }

    def ratio(self, zchat: str, baseline: str) -> float:
        rates = self.rates()
        return median(rates[zchat]) / median(rates[baseline])

    def latency(self, phase: str) -> dict[str, float]:
        """p50, p99 (ms) and the count of the chat's lines in ``phase`` (quiet, upload,
        download), all repetitions together."""
        samples = [ms for z in self.zchat for ms in self._latencies(z, phase)]
        found = percentiles(samples)
        return {"p50": found.get("p50", math.nan), "p99": found.get("p99", math.nan)} | {
            "count": len(samples)
        }

    @staticmethod
    def _latencies(rep: ZchatRep, phase: str) -> tuple[float, ...]:
        return rep.quiet if phase == "quiet" else getattr(rep, phase).latencies

    # --- tables -----------------------------------------------------------------------

    def lines(self) -> list[str]:
        return [
            *self.rate_table(), "", *self.time_table(), "", *self.load_table(), "",
            *self.target_table(),
        ]  # fmt: skip

    def rate_table(self) -> list[str]:
        rates, size = self.rates(), self.config.size_mib

        def cpu(copies: list[tuple[float, float]]) -> str:
            return " / ".join(spread([c[i] for c in copies], 2) for i in (0, 1))

        def against(name: str) -> str:
            return f"{self.ratio(name, 'bare'):.2f}× | {self.ratio(name, 'tcp'):.2f}×"

        ups = [(z.upload.client_cpu, z.upload.broker_cpu) for z in self.zchat]
        downs = [(z.download.broker_cpu, z.download.client_cpu) for z in self.zchat]
        return [
            f"| {size:,} MiB over loopback | MB/s | zchat ÷ bare pyzmq | zchat ÷ TCP "
            "| CPU seconds: sender / receiver |",
            "|---|---|---|---|---|",
            f"| writing a new file, no network (the page cache's pace) "
            f"| {spread(rates['page_cache'])} | | | |",
            f"| plain TCP copy (Python sockets) | {spread(rates['tcp'])} | | "
            f"| {cpu([(c.sender_cpu, c.receiver_cpu) for c in self.tcp])} |",
            f"| bare pyzmq DEALER/ROUTER, credit-based | {spread(rates['bare'])} | | "
            f"| {cpu([(c.sender_cpu, c.receiver_cpu) for c in self.bare])} |",
            f"| zchat upload, Alice → broker (`send_file`) | {spread(rates['upload'])} "
            f"| {against('upload')} | {cpu(ups)} (Alice / broker) |",
            f"| zchat download, broker → Bob (`get_file`) | {spread(rates['download'])} "
            f"| {against('download')} | {cpu(downs)} (broker / Bob) |",
        ]

    def time_table(self) -> list[str]:
        def part(phase: str, start: str, end: str) -> str:
            moves = [getattr(z, phase).moved for z in self.zchat]
            return spread([getattr(m, end) - getattr(m, start) for m in moves], 2)

        def moving(phase: str) -> str:
            moves = [getattr(z, phase).moved for z in self.zchat]
            return spread([self.mb_per_s(m.last_byte - m.first) for m in moves])

        spans = (("start", "first"), ("first", "last_byte"), ("last_byte", "end"), ("start", "end"))
        lines = [
            "| zchat, seconds | to the broker's first answer | bytes moving "
            "| after the last byte | in all | MB/s while bytes move |",
            "|---|---|---|---|---|---|",
        ]
        for phase in ("upload", "download"):
            cells = [part(phase, start, end) for start, end in spans] + [moving(phase)]
            lines.append(f"| {phase} | " + " | ".join(cells) + " |")
        return lines

    def load_table(self) -> list[str]:
        quiet = self.latency("quiet")
        lines = [
            "| zchat | broker RSS growth (MiB) | client RSS growth (MiB) | chat line p50 (ms) "
            "| chat line p99 (ms) | p50 ÷ quiet p50 | lines |",
            "|---|---|---|---|---|---|---|",
            f"| quiet, before the transfers | | | {ms(quiet['p50'])} | {ms(quiet['p99'])} "
            f"| 1.00× | {quiet['count']:,} |",
        ]
        for phase in ("upload", "download"):
            found = self.latency(phase)
            broker = spread([getattr(z, phase).broker_rss_mib for z in self.zchat], 1)
            client = spread([getattr(z, phase).client_rss_mib for z in self.zchat], 1)
            ratio = ms(found["p50"] / quiet["p50"]) + ("×" if found["count"] else "")
            lines.append(
                f"| during the {phase} | {broker} | {client} | {ms(found['p50'])} "
                f"| {ms(found['p99'])} | {ratio} | {found['count']:,} |"
            )
        return lines

    def target_table(self) -> list[str]:
        lines = ["| target | measured | met |", "|---|---|---|"]
        for check in self.checks():
            met = {True: "yes", False: "no", None: "not measured"}[check.met]
            lines.append(f"| {check.target} | {check.measured} | {met} |")
        return lines

    def checks(self) -> list[Check]:
        checks = []
        for name, share, baseline in (
            ("upload", BARE_SHARE, "bare"), ("download", BARE_SHARE, "bare"),
            ("upload", TCP_SHARE, "tcp"), ("download", TCP_SHARE, "tcp"),
        ):  # fmt: skip
            ratio = self.ratio(name, baseline)
            label = "bare pyzmq" if baseline == "bare" else "plain TCP copy"
            checks.append(
                Check(f"zchat {name} ≥ {share}× {label}", f"{ratio:.2f}×", ratio >= share)
            )
        for role in ("broker", "client"):
            grown = max(
                getattr(getattr(z, phase), f"{role}_rss_mib")
                for z in self.zchat
                for phase in ("upload", "download")
            )
            checks.append(
                Check(
                    f"{role} RSS grows ≤ {RSS_GROWTH_MIB:g} MiB (the most of any transfer)",
                    f"{grown:.1f} MiB",
                    grown <= RSS_GROWTH_MIB,
                )
            )
        quiet = self.latency("quiet")["p50"]
        for phase in ("upload", "download"):
            found = self.latency(phase)
            target = f"chat line p50 during the {phase} ≤ {LATENCY_RATIO:g}× quiet p50"
            if not found["count"]:
                checks.append(Check(target, "no line was sent during it", None))
                continue
            ratio = found["p50"] / quiet
            checks.append(Check(target, f"{ratio:.2f}×", ratio <= LATENCY_RATIO))
        return checks

    # --- JSON -------------------------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        config = asdict(self.config) | {"folder": self.folder, "filesystem": self.filesystem}
        return {
            "config": config,
            "mb_per_s": self.rates(),
            "latency_ms": {phase: self.latency(phase) for phase in ("quiet", "upload", "download")},
            "checks": [asdict(check) for check in self.checks()],
            "page_cache_seconds": self.page_cache,
            "tcp": [asdict(c) for c in self.tcp],
            "bare": [asdict(c) for c in self.bare],
            "zchat": [asdict(z) for z in self.zchat],
        }
