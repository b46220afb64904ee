"""Logging in to an accounts broker: how long a login takes, and what guessing costs.

Each run has a fresh `zchat broker --accounts` (history in a file, admin socket in a
temporary folder) with the accounts alice, bob, carol and GUESSED, one password for all.

* idle: bob logs in ``--logins`` times in a row, each a new Client closed before the
  next: the time from ``join()`` to its return, the password check included.
* one-address: 50 wrong passwords a second from 127.0.0.2 for ``--seconds``, each on
  new connections with a new CURVE key pair (a SUB for its inbox, a PUSH for its JOIN),
  naming the GUESSED accounts in turn: each is tried once in 10 s, so that the account
  throttle does not bite and the address throttle does. Each answer is counted by code.
* many-addresses: the same from 127.0.0.2 .. 127.0.0.51 in turn, so that no address
  reaches its throttle either: every attempt goes to the hashing thread, or is "busy".

Before each attack alice (127.0.0.1) says a line every 50 ms for up to 10 s and times
each one's echo; she goes on during the attack, while carol (127.0.0.1) logs in every
2 s. The broker's counts and its poll loop's longest turn are from `zchat admin stats`,
asked before the quiet lines, before the attack, and after the attack's last answer.

    python bench/login.py                  # the three runs, 30 s attacks; Markdown out
    python bench/login.py --only idle --logins 200
    python bench/login.py --seconds 5 --json login.json

Loopback only (127.0.0.0/8); every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

import zmq

from zchat import Client
from zchat import protocol as p
from zchat.admin import request
from zchat.bench import cpu_seconds, percentiles, spawn_broker
from zchat.client.hello import fetch_hello
from zchat.client.transport import Keys
from zchat.errors import ProtocolError, ZchatError
from zchat.passwords import hash_password

RIGHT = "correct horse battery 1"  # every account's password
GUESSED = tuple(f"member{index:03d}" for index in range(500))
GUESS_RATE = 50.0  # attempts a second
MANY = tuple(f"127.0.0.{host}" for host in range(2, 52))
CHAT_RATE = 20.0  # alice's lines a second
QUIET_SECONDS = 10.0  # at most, before each attack
LOGIN_EVERY = 2.0  # carol's logins during an attack
JOIN_SECONDS = 10.0
REPLY_SECONDS = 15.0  # an attempt unanswered this long is counted as such, and closed
MAX_COUNT = 100_000  # a bound on any loop, whatever the options say
RUNS = ("idle", "one-address", "many-addresses")
LONGEST = "longest_ms_since_last_asked"  # zchat admin stats: the loop's
TIMES = "\N{MULTIPLICATION SIGN}"
Sock = zmq.Socket[bytes]


class Broker:
    """`zchat broker --accounts` in a child process, on free ports, with its accounts."""

    def __init__(self, folder: Path) -> None:
        self.admin = folder / "run" / "admin.sock"
        self.log: deque[str] = deque(maxlen=50)  # it logs every refused login
        extra = ["--accounts", "--db", str(folder / "history.db")]
        extra += ["--admin-socket", str(self.admin)]
        self.popen, self.port = spawn_broker(limited=True, extra=extra, log=self.log.append)
        self.key = fetch_hello("127.0.0.1", self.port, JOIN_SECONDS).key
        hashed = hash_password(RIGHT)
        for name in ("alice", "bob", "carol", *GUESSED):
            request(self.admin, "user-add", {"name": name, "hash": hashed, "admin": False})

    def stats(self) -> dict[str, Any]:
        return dict(request(self.admin, "stats")["data"])

    def client(self, name: str) -> Client:
        keys = Keys.for_login(self.key)
        return Client(name, port=self.port, history=0, keys=keys, password=RIGHT)

    def stop(self) -> None:
        self.popen.terminate()
        self.popen.wait(10)


def login_once(broker: Broker, name: str) -> tuple[float, str]:
    """One login and logout: the seconds ``join()`` took, and "ok" or why it failed."""
    client = broker.client(name)
    started = time.monotonic()
    try:
        client.join(timeout=JOIN_SECONDS)
        outcome = "ok"
    except ZchatError as exc:
        outcome = getattr(exc, "code", type(exc).__name__)
    took = time.monotonic() - started
    client.close()
    return took, outcome


def summary(done: list[tuple[float, str]]) -> dict[str, Any]:
    """Logins: how many, how many taken, the refusals by code, the times of those taken."""
    ms = percentiles([took * 1000 for took, outcome in done if outcome == "ok"])
    refused = Counter(outcome for _, outcome in done if outcome != "ok")
    return {"tried": len(done), "ok": len(done) - refused.total(), "refused": refused, "ms": ms}


def idle(broker: Broker, logins: int) -> dict[str, Any]:
    done = [login_once(broker, "bob") for _ in range(min(logins, MAX_COUNT))]
    return {"run": "idle", "logins": summary(done)}


def echoes(client: Client, until: float) -> list[float]:
    """Say a line every 1/CHAT_RATE s until ``until``: each one's time to its echo."""
    times: list[float] = []
    next_line = time.monotonic()
    for index in range(MAX_COUNT):
        while (left := next_line - time.monotonic()) > 0:  # pacing, reading meanwhile
            client.receive(timeout=left)
        if next_line >= until:
            break
        started = time.monotonic()
        sent = client.send(f"ping {index}")
        deadline = started + 5.0
        while (left := deadline - time.monotonic()) > 0:
            msg = client.receive(timeout=left)
            if msg is not None and msg.sender == client.name and msg.id == sent:
                break
        times.append(time.monotonic() - started)
        next_line = started + 1 / CHAT_RATE
    return times


def logins_until(broker: Broker, until: float, done: list[tuple[float, str]]) -> None:
    """carol logs in (and out) every LOGIN_EVERY seconds until ``until``."""
    pace = threading.Event()  # never set: its wait is the pacing
    while time.monotonic() < until and len(done) < MAX_COUNT:
        started = time.monotonic()
        done.append(login_once(broker, "carol"))
        pace.wait(max(0.0, min(started + LOGIN_EVERY, until) - time.monotonic()))


def attempt(ctx: zmq.Context[Sock], broker: Broker, source: str, name: str) -> tuple[Sock, Sock]:
    """A wrong password for ``name`` from ``source``, on a new key pair: its SUB and PUSH."""
    keys = Keys.for_login(broker.key)
    sub, push = ctx.socket(zmq.SUB), ctx.socket(zmq.PUSH)
    for sock, offset in ((sub, 1), (push, 0)):
        sock.linger = 0
        keys.apply(sock)
        sock.connect(f"tcp://{source}:0;127.0.0.1:{broker.port + offset}")
    inbox, secret = os.urandom(16).hex(), os.urandom(16).hex()
    sub.subscribe(p.inbox_topic(inbox))
    join = p.Join(name, secret, inbox, ("general",), password="wrong", mark="l1")
    push.send_multipart(p.encode_client(join))
    return sub, push


def guess(broker: Broker, sources: tuple[str, ...], until: float) -> Counter[str]:
    """GUESS_RATE attempts a second until ``until``; then their last answers, for at most
    REPLY_SECONDS. The answers counted by code ("none": no answer in REPLY_SECONDS)."""
    counts: Counter[str] = Counter()
    ctx: zmq.Context[Sock] = zmq.Context()
    ctx.max_sockets = 4 * int(GUESS_RATE * REPLY_SECONDS) + 64
    waiting: dict[Sock, tuple[Sock, float]] = {}  # oldest first
    poller = zmq.Poller()
    pace = threading.Event()  # never set: its wait is the pacing

    def close(sub: Sock) -> None:
        push, _ = waiting.pop(sub)
        poller.unregister(sub)
        sub.close()
        push.close()

    next_try, end = time.monotonic(), until + REPLY_SECONDS
    try:
        for _ in range(MAX_COUNT * 10):
            now = time.monotonic()
            if now >= end or (now >= until and not waiting):
                break
            if now < until and now >= next_try and counts["sent"] < MAX_COUNT:
                sent = counts["sent"]
                source, name = sources[sent % len(sources)], GUESSED[sent % len(GUESSED)]
                sub, push = attempt(ctx, broker, source, name)
                waiting[sub] = (push, now)
                poller.register(sub, zmq.POLLIN)
                counts["sent"] += 1
                next_try += 1 / GUESS_RATE
            while waiting and now - waiting[oldest := next(iter(waiting))][1] > REPLY_SECONDS:
                counts["none"] += 1
                close(oldest)
            wait = max(0.0, (next_try if now < until else end) - time.monotonic())
            if not waiting:  # a Poller with no socket returns at once, whatever its timeout
                pace.wait(wait)
                continue
            for sub, _ in poller.poll(math.ceil(wait * 1000)):
                try:
                    _, msg = p.decode_server(sub.recv_multipart())
                    counts[msg.code if isinstance(msg, p.Refused) else type(msg).__name__] += 1
                except ProtocolError:
                    counts["undecodable"] += 1
                close(sub)
    finally:
        for sub in list(waiting):
            counts["none"] += 1
            close(sub)
        ctx.term()
    return counts


def attack(broker: Broker, run: str, seconds: float) -> dict[str, Any]:
    sources = MANY if run == "many-addresses" else MANY[:1]
    with broker.client("alice") as alice:
        broker.stats()  # the loop's longest turn, from now
        quiet = echoes(alice, time.monotonic() + min(QUIET_SECONDS, seconds))
        before = broker.stats()
        cpu, started = cpu_seconds(broker.popen.pid), time.monotonic()
        until = started + seconds
        chat: list[float] = []
        logins: list[tuple[float, str]] = []
        threads = [
            threading.Thread(target=lambda: chat.extend(echoes(alice, until)), daemon=True),
            threading.Thread(target=logins_until, args=(broker, until, logins), daemon=True),
        ]
        for thread in threads:
            thread.start()
        answers = guess(broker, sources, until)
        for thread in threads:  # alice's is done by ``until``, carol's a login later
            thread.join(max(0.0, until - time.monotonic()) + 2 * JOIN_SECONDS)
            if thread.is_alive():
                raise SystemExit(f"{thread.name} did not end: {broker.log}")
        after = broker.stats()
        cpu = (cpu_seconds(broker.popen.pid) - cpu) / (time.monotonic() - started)
    counted = Counter(after["logins"]) - Counter(before["logins"])
    quiet_ms, attack_ms = (percentiles(t).get("p50", 0.0) * 1000 for t in (quiet, chat))
    return {
        "run": run,
        "seconds": seconds,
        "sources": len(sources),
        "answers": dict(answers),
        "counted": {key: counted.get(key, 0) for key in after["logins"]},
        "cuts": after["cuts"],
        "broker_cores": cpu,
        "quiet": {"lines": len(quiet), "p50_ms": quiet_ms, "loop_ms": before["loop"][LONGEST]},
        "attack": {
            "lines": len(chat),
            "p50_ms": attack_ms,
            "loop_ms": after["loop"][LONGEST],  # asked just before the attack: since then
            "over_50ms": after["loop"]["over_50ms"] - before["loop"]["over_50ms"],
        },
        "ratio": attack_ms / quiet_ms if quiet_ms else 0.0,
        "logins": summary(logins),
    }


def md(*cells: object) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def rule(columns: int) -> str:
    return "|" + "---|" * columns


def report(rows: list[dict[str, Any]], seconds: float) -> tuple[list[str], bool]:
    """The Markdown tables, and whether every target was met."""
    out: list[str] = []
    checks: list[tuple[str, str, bool]] = []
    for row in (r["logins"] for r in rows if r["run"] == "idle"):
        ms = [f"{row['ms'].get(key, 0.0):.0f} ms" for key in ("p50", "p90", "p99", "max")]
        out += [md("logins in a row", "p50", "p90", "p99", "max", "refused"), rule(6)]
        out += [md(row["tried"], *ms, dict(row["refused"]) or 0), ""]
        p99 = row["ms"].get("p99", float("inf"))
        checks.append(("idle: login p99 ≤ 300 ms", f"{p99:.0f} ms", p99 <= 300))
    attacks = [r for r in rows if r["run"] != "idle"]
    if attacks:
        out += [
            f"{GUESS_RATE:.0f} wrong passwords a second for {seconds:g} s. Their answers, as the "
            "guesser read them and as the broker counted them (`zchat admin stats`):\n",
            md("attack", "attempts", "login-failed", "login-throttled", "busy", "other / none",
               "broker: refused / throttled / busy / taken", "broker CPU (of a core)"),
            rule(8),
        ]  # fmt: skip
    for r in attacks:
        a, c = Counter(r["answers"]), r["counted"]
        other = a["sent"] - a["login-failed"] - a["login-throttled"] - a["busy"] - a["none"]
        counted = " / ".join(f"{c[key]:,}" for key in ("refused", "throttled", "busy", "taken"))
        out.append(
            md(f"{r['run']} ({r['sources']} address{'es' * (r['sources'] > 1)})", f"{a['sent']:,}",
               f"{a['login-failed']:,}", f"{a['login-throttled']:,}", f"{a['busy']:,}",
               f"{other} / {a['none']}", counted, f"{r['broker_cores']:.0%}")
        )  # fmt: skip
    if attacks:
        out += [
            "",
            md("attack", "chat p50 quiet → attack (lines)", "ratio",
               "loop's longest turn, quiet → attack", "turns over 50 ms", "carol's logins ok",
               "her logins taken: p50 / max"),
            rule(7),
        ]  # fmt: skip
    for r in attacks:
        q, t, lg, ratio = r["quiet"], r["attack"], r["logins"], r["ratio"]
        refused = f" (refused: {dict(lg['refused'])})" if lg["refused"] else ""
        p50, most = lg["ms"].get("p50", 0.0), lg["ms"].get("max", 0.0)
        out.append(
            md(r["run"],
               f"{q['p50_ms']:.2f} → {t['p50_ms']:.2f} ms ({q['lines']} → {t['lines']})",
               f"{ratio:.2f}{TIMES}", f"{q['loop_ms']:.1f} → {t['loop_ms']:.1f} ms",
               t["over_50ms"], f"{lg['ok']} of {lg['tried']}{refused}",
               f"{p50:.0f} / {most:.0f} ms")
        )  # fmt: skip
        checks += [
            (f"{r['run']}: chat p50 ≤ 1.5{TIMES} quiet", f"{ratio:.2f}{TIMES}", ratio <= 1.5),
            (f"{r['run']}: no loop turn over 50 ms", f"{t['loop_ms']:.1f} ms", t["loop_ms"] <= 50),
            (f"{r['run']}: carol logs in each time", f"{lg['ok']} of {lg['tried']}",
             lg["ok"] == lg["tried"] > 0),
        ]  # fmt: skip
    out += [*([""] if attacks else []), md("target", "measured", "met"), rule(3)]
    out += [md(name, value, "yes" if met else "no") for name, value, met in checks]
    return out, all(met for _, _, met in checks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="each attack's length")
    parser.add_argument("--logins", type=int, default=100, help="idle: logins in a row")
    parser.add_argument("--only", nargs="*", choices=RUNS, help="these runs (default: all)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()
    args.seconds = min(max(args.seconds, 1.0), 600.0)
    load = os.getloadavg()[0]
    rows = []
    for run in args.only or RUNS:
        with tempfile.TemporaryDirectory() as tmp:
            broker = Broker(Path(tmp))
            try:
                is_idle = run == "idle"
                row = idle(broker, args.logins) if is_idle else attack(broker, run, args.seconds)
            finally:
                broker.stop()
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    lines, met = report(rows, args.seconds)
    print(
        f"{os.cpu_count()} cores, Python {platform.python_version()}, pyzmq {zmq.__version__}, "
        f"libzmq {zmq.zmq_version()}; load average (1 min) {load:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after.\n"
    )
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "all_met": met}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
