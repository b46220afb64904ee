"""One file benchmark: a random file on disk, then for each repetition a plain TCP
copy, a bare pyzmq transfer and zchat's upload and download of it, each timed on its
own. zchat's run has a broker of its own (spawned, history in a WAL file, the files
beside it) and four clients in processes of their own: Alice shares the file, Bob
fetches it, Carol says a line every ``line_every`` seconds and Dave hears them,
quietly first, then during each transfer."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from zchat.bench import cpu_seconds, spawn_broker
from zchat.filebench.config import BLOCK_BYTES, MIB, FileBenchConfig
from zchat.filebench.copies import bare_transfer, tcp_copy
from zchat.filebench.peers import Moved, Watch, file_peer, listener, speaker
from zchat.filebench.report import FileBenchResult, Phase, ZchatRep

# Filesystems that live in memory: the file is put elsewhere when it can be.
IN_MEMORY = frozenset({"tmpfs", "ramfs"})
# Seconds for the processes of a run to start and join, at most.
START_SECONDS = 60.0


def filesystem_of(path: Path) -> str:
    """The type of the filesystem ``path`` is on (the longest mount point holding it)."""
    best, kind = "", "?"
    resolved = str(path.resolve())
    for line in Path("/proc/mounts").read_text().splitlines():
        mount, fs = line.split()[1:3]
        inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > len(best):
            best, kind = mount, fs
    return kind


def scratch_folder(chosen: Path | None) -> Path:
    """A new folder for the run's files: in ``chosen``, else in the temporary folder,
    or /var/tmp when that one is in memory."""
    parent = chosen or Path(tempfile.gettempdir())
    if chosen is None and filesystem_of(parent) in IN_MEMORY and Path("/var/tmp").is_dir():
        parent = Path("/var/tmp")
    return Path(tempfile.mkdtemp(prefix="zchat-filebench-", dir=parent))


def make_file(path: Path, size: int) -> None:
    """``size`` random bytes (incompressible), written a MiB at a time."""
    with path.open("wb") as out:
        for start in range(0, size, MIB):
            out.write(os.urandom(min(MIB, size - start)))


def run(config: FileBenchConfig, out: Callable[[str], None]) -> FileBenchResult:
    folder = scratch_folder(config.folder)
    fs = filesystem_of(folder)
    out(f"files in {folder} ({fs}); making {config.size_mib} MiB of random bytes")
    result = FileBenchResult(config, str(folder), fs)
    try:
        source = folder / "source.bin"
        make_file(source, config.size)
        for rep in range(1, config.reps + 1):

            def say(label: str, seconds: float, rep: int = rep) -> None:
                out(f"rep {rep} {label:22} {result.mb_per_s(seconds):8,.0f} MB/s")

            copy = folder / "copy.bin"
            for label, copy_with, kept in (
                ("plain TCP copy", tcp_copy, result.tcp),
                ("bare pyzmq transfer", bare_transfer, result.bare),
            ):
                result.page_cache.append(write_new(copy, config.size))
                say("writing a new file", result.page_cache[-1])
                kept.append(copy_with(source, copy, config.host))
                _check_copy(copy, config.size)
                say(label, kept[-1].seconds)
            work = folder / f"zchat-{rep}"
            work.mkdir()
            try:
                result.zchat.append(zchat_run(config, source, work, result.page_cache))
            finally:
                shutil.rmtree(work, ignore_errors=True)
            say("zchat upload", result.zchat[-1].upload.seconds)
            say("zchat download", result.zchat[-1].download.seconds)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return result


def write_new(path: Path, size: int) -> float:
    """Seconds to write ``size`` bytes into a new file, a block at a time, from memory;
    then it is deleted. The page cache's own pace, which every receiver pays; and it
    is done just before each transfer so that each one's receiver writes into memory
    freed a moment ago, as every other one does. (A virtual machine whose balloon
    takes free memory back, about 2 s after it is freed, fills new page cache several
    times slower than memory freed a moment ago: without this, a transfer's pace would
    depend on what the one before it freed, and when.)"""
    block = os.urandom(BLOCK_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        start = time.monotonic()
        for offset in range(0, size, BLOCK_BYTES):
            os.pwrite(fd, block[: size - offset], offset)
        seconds = time.monotonic() - start
    finally:
        os.close(fd)
    _check_copy(path, size)
    return seconds


def _check_copy(copy: Path, size: int) -> None:
    """A copy must be whole; it is then deleted (before the kernel writes it back)."""
    held = copy.stat().st_size
    copy.unlink()
    if held != size:
        raise RuntimeError(f"a copy holds {held} bytes of {size}")


def zchat_run(
    config: FileBenchConfig, source: Path, work: Path, page_cache: list[float]
) -> ZchatRep:
    """zchat's upload and download of ``source``, on a broker of its own whose files
    are in ``work`` (seconds of writing a new file before each go to ``page_cache``)."""
    limit = 4 * config.timeout + config.quiet_seconds + START_SECONDS  # each process's life
    size = str(config.size)
    broker, port = spawn_broker(
        config.host, str(work / "history.db"),
        extra=("--files", str(work / "files"), "--max-file-size", size, "--files-quota", size),
    )  # fmt: skip
    spawn = mp.get_context("spawn")
    stop, hearing, heard = spawn.Event(), spawn.Event(), spawn.Queue()
    roles: dict[str, tuple[Any, Any]] = {}  # name -> (commands, results)
    procs = []
    try:
        for name in ("alice", "bob"):
            roles[name] = (spawn.Queue(), spawn.Queue())
            procs.append(
                spawn.Process(target=file_peer, args=(name, config.host, port, *roles[name], limit))
            )
        chat = (config.host, port)
        procs.append(spawn.Process(target=speaker, args=(*chat, config.line_every, stop, limit)))
        procs.append(spawn.Process(target=listener, args=(*chat, hearing, stop, heard, limit)))
        for proc in procs:
            proc.start()
        pids = {name: results.get(timeout=START_SECONDS) for name, (_, results) in roles.items()}
        if not hearing.wait(START_SECONDS):
            raise RuntimeError("the chat's lines never arrived")
        quiet = (time.monotonic(), time.monotonic() + config.quiet_seconds)
        stop.wait(config.quiet_seconds)  # never set here: a quiet spell of chat
        page_cache.append(write_new(work / "primer.bin", config.size))
        sent = _transfer(config, broker.pid, pids["alice"], roles["alice"], ("send", str(source)))
        page_cache.append(write_new(work / "primer.bin", config.size))
        command = ("get", sent.moved.file_id, str(work))
        got = _transfer(config, broker.pid, pids["bob"], roles["bob"], command)
        fetched = Path(got.moved.path)
        if fetched.stat().st_size != config.size:
            raise RuntimeError(f"Bob's copy holds {fetched.stat().st_size} bytes")
        fetched.unlink()
        stop.set()
        latencies = heard.get(timeout=START_SECONDS)
    finally:
        stop.set()
        for commands, _ in roles.values():
            commands.put(("stop",))
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        broker.terminate()
        broker.wait(10)

    def during(start: float, end: float) -> tuple[float, ...]:
        return tuple(ms for stamp, ms in latencies if start <= stamp / 1e9 <= end)

    return ZchatRep(
        replace(sent, latencies=during(sent.moved.start, sent.moved.end)),
        replace(got, latencies=during(got.moved.start, got.moved.end)),
        during(*quiet),
    )


def _transfer(
    config: FileBenchConfig,
    broker: int,
    client: int,
    queues: tuple[Any, Any],
    command: tuple[Any, ...],
) -> Phase:
    """One transfer by a client process: what it timed, the broker's and the client's
    CPU seconds and RSS growth over it (the chat's latencies are put in later)."""
    commands, results = queues
    with Watch({"broker": broker, "client": client}) as watch:
        cpu = cpu_seconds(broker), cpu_seconds(client)
        commands.put(command)
        moved: Moved | str = results.get(timeout=config.timeout)
        broker_cpu, client_cpu = cpu_seconds(broker) - cpu[0], cpu_seconds(client) - cpu[1]
    if isinstance(moved, str):
        raise RuntimeError(f"{command[0]}: {moved}")
    growth = watch.growth_mib()
    return Phase(moved, broker_cpu, client_cpu, growth["broker"], growth["client"])
