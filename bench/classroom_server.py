"""The classroom design zchat replaces, written faithfully for comparison: one thread
per client, a shared list of client sockets, and a loop of send() over that list for
every line, stamped [HH:MM:SS] by the server.

    python bench/classroom_server.py PORT
"""

import socket
import sys
import threading
from datetime import datetime

clients: list[socket.socket] = []
names: dict[socket.socket, str] = {}
lock = threading.Lock()


def broadcast(message: bytes) -> None:
    stamp = ("[" + datetime.now().strftime("%H:%M:%S") + "] ").encode("ascii")
    with lock:
        targets = list(clients)
    for client in targets:  # one slow client holds up everyone behind it
        try:
            client.sendall(stamp + message)
        except OSError:
            remove(client)


def remove(client: socket.socket) -> None:
    with lock:
        if client in clients:
            clients.remove(client)
            name = names.pop(client, "?")
        else:
            return
    client.close()
    broadcast(f"{name} left!\n".encode())


def handle(client: socket.socket) -> None:
    reader = client.makefile("rb")
    name = reader.readline().decode().strip()
    with lock:
        clients.append(client)
        names[client] = name
    broadcast(f"{name} joined!\n".encode())
    try:
        for line in reader:
            broadcast(name.encode() + b": " + line)
    except OSError:  # reset by the client: it is gone all the same
        pass
    remove(client)


def main() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", int(sys.argv[1])))
    server.listen(4096)
    print(f"listening on {server.getsockname()[1]}", flush=True)
    while True:
        client, _ = server.accept()
        threading.Thread(target=handle, args=(client,), daemon=True).start()


if __name__ == "__main__":
    main()
