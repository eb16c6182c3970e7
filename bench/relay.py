#!/usr/bin/env python3
"""relay.py: the one-TLS-leg ceiling (bench/tls_relay.c) and the direct path, one JSON line each.

    bench/relay.py [--relay PATH] [--size 2147483648] [--streams 8] [--per-stream 536870912]
                   [--logdir DIR]

client -plain-> tls_relay edge -TLS 1.3-> tls_relay origin -plain-> service, against client ->
service directly. For each path: one stream of SIZE bytes and STREAMS parallel streams of
PER_STREAM bytes, each downloaded (service -> client) and uploaded (client -> service), MB/s
(10^6 bytes per second, first connect to last byte accounted for) and, through the relay, the
CPU seconds both relay processes spent per GB (10^9 bytes, from /proc/PID/stat). The client and
the service are threads of this process, as in bench/core.py's throughput bench, so they share
the machine with what they measure.

Before the figures, a check: random bytes both ways through the relay, and both ways at once,
compared by SHA-256 (a JSON line bench=relay_check).

The relay binary: --relay, else build/gcc/bench/tls_relay when it is newer than its source,
else this script compiles bench/tls_relay.c into its temporary directory. Everything runs on
127.0.0.1, every process it starts is stopped by PID (SIGTERM, then SIGKILL), even on failure,
and every wait is bounded.
"""
import argparse
import hashlib
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import core  # noqa: E402  (emit, cpu_seconds; it puts tests/integration on sys.path)
import tunnel as T  # noqa: E402  (free ports, openssl PKI, processes stopped by PID)

emit, cpu_seconds = core.emit, core.cpu_seconds

BSSL_INC = "/usr/include/android"
BSSL_LIB = "/usr/lib/x86_64-linux-gnu/android"
CFLAGS = ["-std=c11", "-O2", "-g", "-Wall", "-Wextra", "-Wshadow", "-Wstrict-prototypes",
          "-Wmissing-prototypes", "-Wformat=2", "-Wundef", "-Wvla", "-Wpointer-arith",
          "-Wcast-qual", "-Wimplicit-fallthrough", "-Werror", "-isystem", BSSL_INC, "-Iinclude",
          "-D_GNU_SOURCE"]
LDLIBS = [f"-L{BSSL_LIB}", f"-Wl,-rpath,{BSSL_LIB}", "-lssl", "-lcrypto", "-lpthread"]

CHUNK = 1 << 20  # one send / recv_into of the client and the service
IO_TIMEOUT = 60.0  # one blocking socket call
TRIAL_TIMEOUT = 120.0  # one measurement, all streams


def log(msg):
    print(f"relay.py: {msg}", file=sys.stderr, flush=True)


def relay_binary(arg, tmp):
    if arg:
        return pathlib.Path(arg)
    src = ROOT / "bench" / "tls_relay.c"
    built = ROOT / "build" / "gcc" / "bench" / "tls_relay"
    if built.exists() and built.stat().st_mtime >= src.stat().st_mtime:
        return built
    out = tmp / "tls_relay"
    argv = ["gcc", *CFLAGS, str(src), "-o", str(out), *LDLIBS]
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise SystemExit(f"relay.py: building tls_relay failed:\n{' '.join(argv)}\n{r.stderr}")
    return out


class Relay:
    """tls_relay origin (TLS in, plain out to svc_port) and tls_relay edge (plain in on .pub)."""

    def __init__(self, binary, pki, svc_port, logdir):
        tls_port, self.pub = T.free_ports(2)
        self.origin = self.edge = None
        try:
            self.origin = T.Proc("relay-origin", [
                binary, "origin", "--tls-listen", f"127.0.0.1:{tls_port}", "--cert", pki.cert,
                "--key", pki.key, "--target", f"127.0.0.1:{svc_port}"], logdir)
            m = self.origin.wait_for(r"event=ready .*cipher=(\S+) group=(\S+)", timeout=15)
            self.cipher, self.group = m.group(1), m.group(2)
            self.edge = T.Proc("relay-edge", [
                binary, "edge", "--listen", f"127.0.0.1:{self.pub}",
                "--connect", f"127.0.0.1:{tls_port}"], logdir)
            self.edge.wait_for(r"event=ready ", timeout=15)
        except BaseException:
            self.stop()
            raise

    def procs(self):
        return [p for p in (self.edge, self.origin) if p is not None]

    def cpu(self):
        return {p.name: cpu_seconds(p.pid) for p in self.procs()}

    def stop(self):
        """Stops both by PID; returns {name: exit status} (0: clean exit on SIGTERM)."""
        return {p.name: p.stop() for p in self.procs()}

    def unclean_closes(self):
        return sum(1 for p in self.procs() for f in p.events("close") if f.get("clean") != "1")


class Service:
    """The local service on 127.0.0.1:port. Each trial arms it for N connections."""

    def __init__(self):
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(64)
        self.srv.settimeout(1.0)
        self.port = self.srv.getsockname()[1]

    def serve(self, n, handler, deadline):
        """Accepts n connections (until deadline) and runs handler(sock, i) on each in a thread.
        Returns the accepting thread; .workers holds the handler threads."""
        workers = []

        def accept_loop():
            for i in range(n):
                for _ in range(int(TRIAL_TIMEOUT) + 10):
                    if time.monotonic() >= deadline:
                        return
                    try:
                        c, _ = self.srv.accept()
                        break
                    except socket.timeout:
                        continue
                else:
                    return
                c.settimeout(IO_TIMEOUT)
                t = threading.Thread(target=handler, args=(c, i), daemon=True)
                t.start()
                workers.append(t)

        th = threading.Thread(target=accept_loop, daemon=True)
        th.workers = workers
        th.start()
        return th

    def close(self):
        self.srv.close()


def send_n(c, n, blob):
    left = n
    view = memoryview(blob)
    while left > 0:
        left -= c.send(view[: min(left, len(blob))])


def recv_all(c, buf, sink=None):
    """Reads until EOF into buf (reused); returns the byte count. sink(memoryview) sees data."""
    moved = 0
    view = memoryview(buf)
    while True:
        k = c.recv_into(buf)
        if k == 0:
            return moved
        if sink is not None:
            sink(view[:k])
        moved += k


def trial(svc, port, direction, streams, per, payload=None):
    """streams parallel transfers of per bytes each; returns (bytes moved, seconds, errors,
    digests). payload: bytes to repeat instead of a constant blob (the check hashes them)."""
    blob = payload if payload is not None else b"\xa5" * CHUNK
    moved = [0] * streams
    digests = [None] * streams
    errors = []
    deadline = time.monotonic() + TRIAL_TIMEOUT

    def hasher(i):
        if payload is None:
            return None, None
        h = hashlib.sha256()
        return h, h.update

    def service(c, i):
        try:
            if direction == "download":
                send_n(c, per, blob)
                c.shutdown(socket.SHUT_WR)
                c.recv(1)  # the client's close
            else:
                h, sink = hasher(i)
                moved[i] = recv_all(c, bytearray(CHUNK), sink)
                if h is not None:
                    digests[i] = h.hexdigest()
        except OSError as e:
            errors.append(f"service: {e!r}")
        finally:
            c.close()

    def client(i):
        try:
            c = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        except OSError as e:
            errors.append(f"connect: {e!r}")
            return
        try:
            if direction == "download":
                h, sink = hasher(i)
                moved[i] = recv_all(c, bytearray(CHUNK), sink)
                if h is not None:
                    digests[i] = h.hexdigest()
            else:
                send_n(c, per, blob)
                c.shutdown(socket.SHUT_WR)
                c.recv(1)  # the service's close: it has read everything
        except OSError as e:
            errors.append(f"client: {e!r}")
        finally:
            c.close()

    acc = svc.serve(streams, service, deadline)
    t0 = time.monotonic()
    clients = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(streams)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(max(0.0, deadline - time.monotonic()))
    acc.join(max(0.0, deadline - time.monotonic()))
    for t in acc.workers:
        t.join(max(0.0, deadline - time.monotonic()))
    dt = time.monotonic() - t0
    if any(t.is_alive() for t in clients + acc.workers + [acc]):
        errors.append(f"not finished within {TRIAL_TIMEOUT:.0f} s")
    return sum(moved), dt, errors, digests


def measure(svc, relay, path, direction, streams, per):
    port = relay.pub if path == "relay" else svc.port
    cpu0 = relay.cpu() if path == "relay" else None
    moved, dt, errors, _ = trial(svc, port, direction, streams, per)
    line = dict(bench="throughput", path=path, streams=streams, direction=direction,
                bytes=moved, ok=moved == streams * per and not errors, seconds=round(dt, 3),
                mb_per_s=round(moved / dt / 1e6, 1))
    if path == "relay":
        cpu1 = relay.cpu()
        gb = max(moved, 1) / 1e9
        per_proc = {k: (cpu1[k] - cpu0[k]) / gb for k in cpu1}
        line.update(relay_cpu_s_per_gb=round(sum(per_proc.values()), 3),
                    edge_cpu_s_per_gb=round(per_proc["relay-edge"], 3),
                    origin_cpu_s_per_gb=round(per_proc["relay-origin"], 3),
                    cipher=relay.cipher)
    else:
        line.update(relay_cpu_s_per_gb=None)
    if errors:
        line["errors"] = errors[:4]
    emit(**line)
    return line["ok"]


def check(svc, relay):
    """Random bytes through the relay, each way and both ways at once, by SHA-256."""
    payload = os.urandom(CHUNK)
    n = 24 * CHUNK + 12345  # not a multiple of a record or a read
    want = hashlib.sha256()
    for left in range(n, 0, -CHUNK):
        want.update(payload[: min(left, CHUNK)])
    want = want.hexdigest()
    res, errs = {}, []
    for direction in ("download", "upload"):
        moved, _, e, d = trial(svc, relay.pub, direction, 1, n, payload)
        res[direction] = moved == n and d[0] == want and not e
        errs += e
    # both ways on one connection at once: the service echoes what it reads
    echo_got = [None]

    def echo(c, _i):
        try:
            buf = bytearray(CHUNK)
            for _ in range(n + 1):  # each recv moves >= 1 byte
                k = c.recv_into(buf)
                if k == 0:
                    break
                c.sendall(memoryview(buf)[:k])
            c.shutdown(socket.SHUT_WR)
        except OSError as e:
            errs.append(f"echo: {e!r}")
        finally:
            c.close()

    acc = svc.serve(1, echo, time.monotonic() + TRIAL_TIMEOUT)
    c = socket.create_connection(("127.0.0.1", relay.pub), timeout=IO_TIMEOUT)
    try:
        def reader():
            h = hashlib.sha256()
            try:
                recv_all(c, bytearray(CHUNK), h.update)
                echo_got[0] = h.hexdigest()
            except OSError as e:
                errs.append(f"echo reader: {e!r}")

        rt = threading.Thread(target=reader, daemon=True)
        rt.start()
        send_n(c, n, payload)
        c.shutdown(socket.SHUT_WR)
        rt.join(TRIAL_TIMEOUT)
    finally:
        c.close()
    acc.join(TRIAL_TIMEOUT)
    for t in acc.workers:
        t.join(TRIAL_TIMEOUT)
    res["both_ways"] = echo_got[0] == want
    ok = all(res.values())
    line = dict(bench="relay_check", ok=ok, bytes=n, cipher=relay.cipher, group=relay.group,
                **{f"{k}_sha256_ok": v for k, v in res.items()})
    if errs:
        line["errors"] = errs[:4]
    emit(**line)
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--relay", help="tls_relay binary (default: build it if need be)")
    ap.add_argument("--size", type=int, default=2 << 30, help="bytes of the one-stream runs")
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--per-stream", type=int, default=512 << 20)
    ap.add_argument("--logdir", help="keep the relay logs here (default: a temporary directory)")
    a = ap.parse_args()
    ok = True
    with tempfile.TemporaryDirectory(prefix="et-relay-") as d:
        tmp = pathlib.Path(d)
        binary = relay_binary(a.relay, tmp)
        log(f"relay binary {binary}")
        pki = T.Pki(tmp / "pki")
        svc = Service()
        relay = None
        try:
            relay = Relay(binary, pki, svc.port, pathlib.Path(a.logdir or tmp / "logs"))
            log(f"cipher {relay.cipher} group {relay.group}; edge pid {relay.edge.pid}, "
                f"origin pid {relay.origin.pid}")
            if not check(svc, relay):
                ok = False
            else:
                for streams, per in ((1, a.size), (a.streams, a.per_stream)):
                    for direction in ("download", "upload"):
                        for path in ("relay", "direct"):
                            ok &= measure(svc, relay, path, direction, streams, per)
            unclean = relay.unclean_closes()
            if unclean:
                log(f"{unclean} relay connections did not close cleanly")
        finally:
            status = relay.stop() if relay is not None else {}
            svc.close()
        log(f"relay exit statuses on SIGTERM: {status}")
        for p in (relay.procs() if relay is not None else []):
            stats = [x for x in p.lines() if "event=stats" in x]
            if stats:
                log(f"{p.name}: {stats[-1]}")
        if any(v != 0 for v in status.values()):
            ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
