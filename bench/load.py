#!/usr/bin/env python3
"""load.py: background load for the benches, in a process of its own.

    load.py PUBLIC_PORT SERVICE_PORT N SECONDS [download|upload]

Listens on 127.0.0.1:SERVICE_PORT as a local service that streams bytes to whoever connects,
opens N clients to 127.0.0.1:PUBLIC_PORT (through the tunnel) that read as fast as they can, and
stops after SECONDS (or when stdin closes). Prints one JSON line with the bytes moved.
With `upload` the roles of the bytes turn round: the clients send as fast as they can and the
service reads (and counts) everything.
Every loop is bounded by the deadline.
"""
import json
import socket
import sys
import threading
import time


def main():
    pub, svc, n, secs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    up = len(sys.argv) > 5 and sys.argv[5] == "upload"
    deadline = time.monotonic() + secs
    blob = b"\x5a" * (1 << 20)
    moved = [0] * n
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", svc))
    srv.listen(64)
    srv.settimeout(1.0)

    def serve():
        while time.monotonic() < deadline:
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            threading.Thread(target=sink if up else source, args=(c,), daemon=True).start()

    def source(c):
        c.settimeout(2.0)
        try:
            while time.monotonic() < deadline:
                c.send(blob)
        except OSError:
            pass
        c.close()

    def sink(c):
        c.settimeout(2.0)
        buf = bytearray(1 << 20)
        try:
            while time.monotonic() < deadline:
                if c.recv_into(buf) == 0:
                    break
        except OSError:
            pass
        c.close()

    def reader(i):
        try:
            c = socket.create_connection(("127.0.0.1", pub), timeout=5)
        except OSError:
            return
        c.settimeout(2.0)
        buf = bytearray(1 << 20)
        try:
            while time.monotonic() < deadline:
                k = c.send(blob) if up else c.recv_into(buf)
                if k == 0:
                    break
                moved[i] += k
        except OSError:
            pass
        c.close()

    threading.Thread(target=serve, daemon=True).start()
    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    print(json.dumps({"load": "ready"}), flush=True)
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 3)
    print(json.dumps({"load": "done", "bytes": sum(moved), "seconds": secs}), flush=True)


if __name__ == "__main__":
    main()
