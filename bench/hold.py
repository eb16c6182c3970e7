#!/usr/bin/env python3
"""hold.py PORT N: a local service that accepts up to N connections on 127.0.0.1:PORT and holds
them open without reading, printing "held K" on stdout each time K reaches a multiple of 500 or
N. Ends when stdin closes (its parent stopped) or after 600 s. For the memory bench: the
connections live in this process so the bench's own descriptors are not doubled."""
import resource
import select
import socket
import sys
import time


def main():
    port, n = int(sys.argv[1]), int(sys.argv[2])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(4096)
    srv.setblocking(False)
    held = []
    deadline = time.monotonic() + 600
    print("listening", flush=True)
    while time.monotonic() < deadline:
        r, _, _ = select.select([srv, sys.stdin], [], [], 1.0)
        if sys.stdin in r and not sys.stdin.buffer.read1(1):
            break
        if srv in r:
            for _ in range(1000):
                try:
                    c, _ = srv.accept()
                except BlockingIOError:
                    break
                held.append(c)
                if len(held) % 500 == 0 or len(held) == n:
                    print(f"held {len(held)}", flush=True)
    for c in held:
        c.close()


if __name__ == "__main__":
    main()
