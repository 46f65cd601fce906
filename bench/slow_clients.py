#!/usr/bin/env python3
"""Slow clients for `make bench`: N connections to the gateway that each send complete headers
declaring a 1 MiB body, then dribble it one byte a second, for SECONDS. Prints one JSON line:
how many connections were held, and how many the gateway answered (its body-read deadline) and
closed meanwhile. Traffic goes to 127.0.0.1 only; standard library only.

    slow_clients.py HOST:PORT CLIENT_ID TOKEN CLIENTS SECONDS
"""

from __future__ import annotations

import json
import socket
import sys
import time


def main() -> None:
    addr, client_id, token, clients, seconds = sys.argv[1:6]
    host, port = addr.rsplit(":", 1)
    assert host == "127.0.0.1", "slow clients only talk to 127.0.0.1"
    head = (
        f"POST /powehi/smile HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n"
        f"X-Client-ID: {client_id}\r\nX-Client-Access-Token: {token}\r\nContent-Length: 1048576\r\n\r\n{{"
    ).encode()
    held = []
    for _ in range(int(clients)):
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.sendall(head)
        sock.setblocking(False)
        held.append(sock)
    answered: set[int] = set()
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        for i, sock in enumerate(held):
            if i in answered:
                continue
            try:
                if sock.recv(4096):
                    answered.add(i)
                    continue
            except BlockingIOError:
                pass
            except OSError:
                answered.add(i)
                continue
            try:
                sock.send(b" ")
            except OSError:
                answered.add(i)
        time.sleep(1.0)
    for sock in held:
        sock.close()
    print(json.dumps({"clients": len(held), "seconds": float(seconds), "answered": len(answered)}))


if __name__ == "__main__":
    main()
