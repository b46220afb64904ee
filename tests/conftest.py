"""Fixtures: a real broker on OS-chosen loopback ports, clients that always close."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq

from screen import spawn  # noqa: F401  (a fixture: `zchat join` in a pty)
from support import Proc, start_broker
from zchat import Client
from zchat.broker.server import Broker, BrokerConfig


@pytest.fixture(autouse=True, scope="session")
def _private_homes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test writes to the real ~/.local/share, ~/.config (known_hosts) or runtime
    folder (admin sockets): children inherit this too."""
    kept = ("XDG_DATA_HOME", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME")
    saved = {key: os.environ.get(key) for key in kept}
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("data-home"))
    os.environ["XDG_RUNTIME_DIR"] = str(tmp_path_factory.mktemp("runtime"))
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("config-home"))
    yield
    for key, value in saved.items():
        if value is None:
            del os.environ[key]
        else:
            os.environ[key] = value


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.destroy(linger=0)


class RunningBroker:
    """A Broker serving in a thread of the test process."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], **config: Any) -> None:
        config.setdefault("port", 0)
        config.setdefault("linger", 0.2)
        self.broker = Broker(BrokerConfig(**config), context=ctx)
        self.port = self.broker.port
        self.thread = threading.Thread(target=self.broker.run, name="broker", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.broker.stop()
        self.thread.join(10)
        assert not self.thread.is_alive(), "broker did not stop"


@pytest.fixture
def broker(
    ctx: zmq.Context[zmq.Socket[bytes]], request: pytest.FixtureRequest
) -> Iterator[RunningBroker]:
    """A broker with the default config, or ``@pytest.mark.broker(**config)``'s."""
    marker = request.node.get_closest_marker("broker")
    running = RunningBroker(ctx, **(marker.kwargs if marker else {}))
    yield running
    running.stop()


@pytest.fixture
def make_client(
    broker: RunningBroker, ctx: zmq.Context[zmq.Socket[bytes]]
) -> Iterator[Callable[..., Client]]:
    """make_client("Alice") -> a joined Client; all are closed after the test."""
    made: list[Client] = []

    def make(name: str, join: bool = True, **kwargs: object) -> Client:
        kwargs.setdefault("port", broker.port)
        client = Client(name, context=ctx, **kwargs)  # type: ignore[arg-type]
        made.append(client)
        if join:
            client.join()
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Child processes to kill and reap after the test."""
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.stop()


@pytest.fixture
def broker_proc(procs: list[Proc]) -> tuple[Proc, int]:
    """`zchat broker` as a child process, listening; (process, port)."""
    proc, port = start_broker()
    procs.append(proc)
    return proc, port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port pair (N, N+1) where no broker answers: held by listening sockets of this
    test that never accept, so no other program can take it meanwhile (as it could a
    port a stopped broker gave back). Connections are made, and never answered."""
    for _ in range(20):
        with socket.socket() as low, socket.socket() as high:
            low.bind(("127.0.0.1", 0))
            port = low.getsockname()[1]
            try:
                high.bind(("127.0.0.1", port + 1))
            except OSError:
                continue  # N+1 is taken: try another N
            low.listen()
            high.listen()
            yield port
            return
    raise AssertionError("no free port pair")
