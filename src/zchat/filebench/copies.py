"""The two baselines a zchat transfer is held against, each end in its own process:

* a plain TCP copy over loopback, as short as Python makes it: the sender reads the
  file a block at a time and ``sendall``s it; the receiver ``recv_into``s a buffer and
  writes it out;
* a bare pyzmq credit-based transfer, the ZeroMQ guide's fileio3 (chapter 7): a DEALER
  asks a ROUTER for a block at an offset, CREDIT blocks in flight; the ROUTER ``pread``s
  and sends it; the DEALER writes each block to a file as it lands. The limit of
  zchat's design, without its protocol, its checks and its hashing.

The harness's process is one end (the sender, the receiver); a spawned process the
other. Both clocks are CLOCK_MONOTONIC, which every process on the machine shares.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from zchat.filebench.config import BLOCK_BYTES, CREDIT

# Seconds one end waits for the other (a connection, a block) before it gives up.
WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class Copy:
    """One copy of the file: its seconds, and each end's CPU seconds over it."""

    seconds: float
    sender_cpu: float
    receiver_cpu: float


# --- a plain TCP copy -----------------------------------------------------------------


def tcp_receiver(host: str, dest: str, ports: Any, results: Any) -> None:
    """The receiving end (a process): accept one connection, write all it brings."""
    with socket.create_server((host, 0)) as server:
        ports.put(server.getsockname()[1])
        server.settimeout(WAIT_SECONDS)
        conn, _ = server.accept()
    buffer = bytearray(BLOCK_BYTES)
    view = memoryview(buffer)
    cpu = time.process_time()
    with conn, open(dest, "wb") as out:
        conn.settimeout(WAIT_SECONDS)
        while received := conn.recv_into(buffer):
            out.write(view[:received])
    results.put((time.monotonic(), time.process_time() - cpu))


def tcp_copy(source: Path, dest: Path, host: str) -> Copy:
    """Send ``source`` to a receiver process that writes it to ``dest``."""
    spawn = mp.get_context("spawn")
    ports, results = spawn.Queue(), spawn.Queue()
    receiver = spawn.Process(target=tcp_receiver, args=(host, str(dest), ports, results))
    receiver.start()
    try:
        port = ports.get(timeout=WAIT_SECONDS)
        buffer = bytearray(BLOCK_BYTES)
        view = memoryview(buffer)
        with socket.create_connection((host, port), WAIT_SECONDS) as conn:
            with source.open("rb", buffering=0) as stream:
                start, cpu = time.monotonic(), time.process_time()
                while read := stream.readinto(buffer):
                    conn.sendall(view[:read])
            conn.shutdown(socket.SHUT_WR)
            sender_cpu = time.process_time() - cpu
        end, receiver_cpu = results.get(timeout=WAIT_SECONDS * 10)
    finally:
        receiver.join(WAIT_SECONDS)
        if receiver.is_alive():
            receiver.kill()
    return Copy(end - start, sender_cpu, receiver_cpu)


# --- a bare pyzmq credit-based transfer -----------------------------------------------


def block_server(host: str, source: str, ports: Any) -> None:
    """The sending end (a process): a ROUTER that answers ``fetch OFFSET SIZE`` with
    those bytes of ``source``, and ``bye`` with its CPU seconds since ``hello``."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 1000)
    ports.put(router.bind_to_random_port(f"tcp://{host}"))
    cpu = time.process_time()
    with open(source, "rb", buffering=0) as stream:
        fd = stream.fileno()
        while router.poll(int(WAIT_SECONDS * 1000)):
            identity, command, *args = router.recv_multipart()
            if command == b"fetch":
                offset, size = int(args[0]), int(args[1])
                router.send_multipart([identity, os.pread(fd, size, offset)], copy=False)
            elif command == b"hello":
                cpu = time.process_time()
                router.send_multipart([identity, b"hello"])
            else:  # bye
                router.send_multipart([identity, b"%f" % (time.process_time() - cpu)])
                break
    router.close()
    ctx.term()


def bare_transfer(source: Path, dest: Path, host: str) -> Copy:
    """Fetch ``source`` from a block server process, CREDIT blocks in flight, into
    ``dest``."""
    size = source.stat().st_size
    spawn = mp.get_context("spawn")
    ports = spawn.Queue()
    server = spawn.Process(target=block_server, args=(host, str(source), ports))
    server.start()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    try:
        dealer.connect(f"tcp://{host}:{ports.get(timeout=WAIT_SECONDS)}")
        dealer.send(b"hello")
        _receive(dealer)  # connected: what follows is the transfer alone
        start, cpu = time.monotonic(), time.process_time()
        asked = received = 0
        with dest.open("wb") as out:
            while received < size:
                while asked < size and asked - received < CREDIT * BLOCK_BYTES:
                    block = min(BLOCK_BYTES, size - asked)
                    dealer.send_multipart([b"fetch", b"%d" % asked, b"%d" % block])
                    asked += block
                data = _receive(dealer)
                out.write(data.buffer)
                received += len(data.buffer)
        end, receiver_cpu = time.monotonic(), time.process_time() - cpu
        dealer.send(b"bye")
        sender_cpu = float(_receive(dealer).bytes)
    finally:
        dealer.close()
        ctx.term()
        server.join(WAIT_SECONDS)
        if server.is_alive():
            server.kill()
    return Copy(end - start, sender_cpu, receiver_cpu)


def _receive(sock: zmq.Socket[bytes]) -> zmq.Frame:
    if not sock.poll(int(WAIT_SECONDS * 1000)):
        raise TimeoutError(f"the block server sent nothing for {WAIT_SECONDS:g} s")
    return sock.recv(copy=False)
