"""``zchat bench``: measure a broker."""

from __future__ import annotations

import click

from zchat.cli.options import Failure, host_option, port_option
from zchat.filebench.config import FileBenchConfig

FLOOD_HINT_RATE = 20  # lines a second per publisher past the broker's default limit


@click.command()
@host_option("Broker address (env ZCHAT_HOST).")
@port_option("Broker port; the broker also uses PORT+1 and PORT+2 (env ZCHAT_PORT).", 1)
@click.option("--spawn", is_flag=True, help="Start a broker of its own (free ports, no history).")
@click.option(
    "--publishers",
    "-p",
    type=click.IntRange(1, 100),
    default=1,
    show_default=True,
    help="Publishing clients (joined, each in a thread).",
)
@click.option(
    "--subscribers",
    "-s",
    type=click.IntRange(1, 2000),
    default=10,
    show_default=True,
    help="Subscribing sockets (in worker processes, 25 per process).",
)
@click.option(
    "--messages",
    "-n",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Messages per publisher.",
)
@click.option(
    "--size",
    type=click.IntRange(40, 4096),
    default=100,
    show_default=True,
    help="Bytes of text per message.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Messages per second per publisher; 0 sends as fast as the broker takes them.",
)
@click.option("--room", default="bench", show_default=True, help="Room to use.")
@click.option(
    "--count-only",
    is_flag=True,
    help="Subscribers count lines and read their send time without decoding them, so "
    "that the broker is measured rather than its readers.",
)
@click.option(
    "--files",
    is_flag=True,
    help="Measure file transfers instead, on a broker of its own: a file sent and "
    "fetched through zchat against a plain TCP copy and a bare pyzmq transfer of it, "
    "the RSS of the broker and the clients, and a chat line's latency meanwhile.",
)
@click.option(
    "--file-size",
    type=click.IntRange(1, 64 * 1024),
    default=FileBenchConfig.size_mib,
    show_default=True,
    help="MiB of the file --files moves.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def bench(
    host: str,
    port: int,
    spawn: bool,
    publishers: int,
    subscribers: int,
    messages: int,
    size: int,
    rate: float,
    room: str,
    count_only: bool,
    files: bool,
    file_size: int,
    as_json: bool,
) -> None:
    """Measure a broker: throughput, loss and end-to-end latency.

    Prints a progress line each second on stderr, then sent, delivered, lost, msgs/s,
    latency p50/p90/p99/max, how busy each part was and what limited the run. With
    --spawn, the broker's CPU per line and per delivered message too. With --files,
    file transfers instead (bench/files.py is the same run, repeated)."""
    import json

    if files:
        bench_files(FileBenchConfig(file_size, host=host), as_json)
        return
    from zchat.bench import Bench, BenchConfig, ZchatTarget, spawn_broker
    from zchat.errors import ZchatError

    broker = None
    if spawn:
        broker, port = spawn_broker(host)
    config = BenchConfig(
        host, port, publishers, subscribers, messages, size, rate, room, count_only=count_only
    )
    try:
        pid = broker.pid if broker is not None else None
        result = Bench(config, ZchatTarget(host, port, room), broker_pid=pid).run()
    except ZchatError as exc:
        raise Failure(str(exc)) from None
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait(10)
    if as_json:
        click.echo(json.dumps(result.as_dict()))
    else:
        for line in result.lines():
            click.echo(line)
    if result.lost and not spawn and result.sent_per_second / publishers > FLOOD_HINT_RATE:
        click.echo(
            f"zchat: each publisher sent {result.sent_per_second / publishers:,.0f} lines a "
            "second: a broker with the default flood limit (20 a second per session) drops "
            "most of them. Start it with --rate 0 to measure it, or use --spawn.",
            err=True,
        )


def bench_files(config: FileBenchConfig, as_json: bool) -> None:
    """``zchat bench --files``: progress on stderr, then the tables or the JSON."""
    import json

    from zchat.filebench.run import run

    found = run(config, lambda line: click.echo(line, err=True))
    click.echo(json.dumps(found.as_dict()) if as_json else "\n".join(found.lines()))
