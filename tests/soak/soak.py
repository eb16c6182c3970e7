#!/usr/bin/env python3
"""make soak: a bounded run (default 600 s, SOAK_SECONDS to change) of the release binaries with
1,000 concurrent mixed streams, origin restarts and cancels. Not part of CI.

    edged  <-  two originctl replicas of one tunnel (public TCP port)  ->  a local service

Each of the 1,000 client tasks loops over: a download (the service sends N bytes of a seeded
pattern; the client checks length and SHA-256), an echo (the client sends N bytes and checks
they come back), or a cancel (the client reads a little of a large download, then resets).
Every RESTART_EVERY s one replica is sent SIGTERM (it drains: GOAWAY, its streams finish, it
exits) and is started again, so sessions come and go under load. Every SAMPLE_EVERY s the RSS
and open descriptors of edged and of each replica are sampled.

It prints one JSON line per sample and a summary line, and exits non-zero when a stream that
was not cancelled failed or came back changed, or when edged's RSS or descriptors grew over
the run (last third of the samples against the first third after warm-up: > 25% and > 4 MiB
RSS, or > 50 descriptors).
"""
import asyncio
import hashlib
import json
import os
import pathlib
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = ROOT / os.environ.get("ET_BUILD_DIR", "build/gcc")
LOCAL = "127.0.0.1"
SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
CLIENTS = int(os.environ.get("SOAK_CLIENTS", "1000"))
RESTART_EVERY = float(os.environ.get("SOAK_RESTART_EVERY", "45"))
SAMPLE_EVERY = 10.0
WARMUP = min(60.0, SECONDS / 4)


def free_port():
    with socket.socket() as s:
        s.bind((LOCAL, 0))
        return s.getsockname()[1]


BLOCK = 64 * 1024


def pattern_block(seed):
    """The 64 KiB block that stream `seed` repeats (never the whole stream in memory)."""
    return hashlib.sha256(struct.pack(">Q", seed)).digest() * (BLOCK // 32)


def pattern_pieces(seed, n):
    block = pattern_block(seed)
    for off in range(0, n, BLOCK):
        yield block[:min(BLOCK, n - off)]


def pattern_digest(seed, n):
    h = hashlib.sha256()
    for piece in pattern_pieces(seed, n):
        h.update(piece)
    return h.digest()


# --- the local service -------------------------------------------------------------------------

async def serve(reader, writer):
    try:
        head = await reader.readexactly(13)
        op, n, seed = head[0:1], struct.unpack(">I", head[1:5])[0], struct.unpack(">Q", head[5:])[0]
        if op == b"D":
            for piece in pattern_pieces(seed, n):
                writer.write(piece)
                await writer.drain()
        elif op == b"E":
            left = n
            while left > 0:
                chunk = await reader.read(min(left, 256 * 1024))
                if not chunk:
                    break
                writer.write(chunk)
                await writer.drain()
                left -= len(chunk)
        writer.write_eof()
        await reader.read()  # until the client's EOF
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


# --- the clients -------------------------------------------------------------------------------

class Tally:
    def __init__(self):
        self.ok = {"download": 0, "echo": 0}
        self.cancelled = 0
        self.failed = []
        self.bytes = 0


async def one_stream(port, rnd, tally):
    op = rnd.choices(["download", "echo", "cancel"], weights=[5, 3, 2])[0]
    n = rnd.choice([4 * 1024, 64 * 1024, 512 * 1024, 2 * 1024 * 1024])
    seed = rnd.getrandbits(63)
    reader, writer = await asyncio.open_connection(LOCAL, port)
    try:
        if op == "cancel":
            writer.write(b"D" + struct.pack(">IQ", 64 * 1024 * 1024, seed))
            await reader.readexactly(32 * 1024)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # RST: the client walked away
            tally.cancelled += 1
            return
        expect = pattern_digest(seed, n)
        if op == "download":
            writer.write(b"D" + struct.pack(">IQ", n, seed))
        else:
            writer.write(b"E" + struct.pack(">IQ", n, seed))
            for piece in pattern_pieces(seed, n):
                writer.write(piece)
                await writer.drain()
        await writer.drain()
        writer.write_eof()
        h, count = hashlib.sha256(), 0
        async def read_all():
            nonlocal count
            for _ in range(1 << 20):
                chunk = await reader.read(256 * 1024)
                if not chunk:
                    return
                h.update(chunk)
                count += len(chunk)
        await asyncio.wait_for(read_all(), 120)
        if count != n or h.digest() != expect:
            tally.failed.append(f"{op} {n}: {count} bytes back, digest "
                                f"{'ok' if h.digest() == expect else 'differs'}")
        else:
            tally.ok[op] += 1
            tally.bytes += n
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
        tally.failed.append(f"{op} {n}: {exc!r}")
    finally:
        if not writer.transport.is_closing():
            writer.close()


async def client_loop(i, port, deadline, tally):
    rnd = random.Random(i)
    while time.monotonic() < deadline:
        await one_stream(port, rnd, tally)


# --- processes ---------------------------------------------------------------------------------

def run(argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60, **kw)


def proc_sample(pid):
    try:
        rss = 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
        return rss, len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def wait_log(path, needle, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in path.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise SystemExit(f"soak: no '{needle}' in {path} within {timeout} s")


async def main():
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="et-soak-"))
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", tmp / "k.pem", "-out", tmp / "c.pem", "-days", "2",
         "-subj", "/CN=localhost"])
    (tmp / "token.key").write_text(run(["openssl", "rand", "-base64", "32"]).stdout)
    tunnel_port, public_port = free_port(), free_port()
    server = await asyncio.start_server(serve, LOCAL, 0, backlog=4096)
    service_port = server.sockets[0].getsockname()[1]

    procs = {}
    edge_log = tmp / "edged.log"
    edged = subprocess.Popen(
        [BIN / "edged", "--tunnel", f"{LOCAL}:{tunnel_port}", "--cert", tmp / "c.pem",
         "--key", tmp / "k.pem", "--token-key", tmp / "token.key",
         "--tcp-ports", f"{public_port}-{public_port}", "--tcp-bind", LOCAL,
         "--max-client-conns", "0", "--log-level", "warn"],
        stdout=subprocess.DEVNULL, stderr=open(edge_log, "w"))
    CHILDREN.append(edged)
    procs["edged"] = edged
    time.sleep(0.3)
    token = run([BIN / "edged", "token", "--token-key", tmp / "token.key", "--name", "soak",
                 "--tcp", str(public_port), "--ttl", "1d"]).stdout.strip().splitlines()[-1]
    der = subprocess.run(f"openssl x509 -in {tmp / 'c.pem'} -pubkey -noout | openssl pkey "
                         "-pubin -outform DER", shell=True, capture_output=True, check=True).stdout
    pin = "sha256:" + hashlib.sha256(der).hexdigest()

    def start_origin(name):
        log = tmp / f"{name}.log"
        p = subprocess.Popen(
            [BIN / "originctl", "connect", "--edge", f"{LOCAL}:{tunnel_port}", "--token", token,
             "--pin", pin, "--tcp", f"{public_port}={LOCAL}:{service_port}",
             "--drain-timeout", "30s"],
            stdout=subprocess.DEVNULL, stderr=open(log, "w"))
        CHILDREN.append(p)
        wait_log(log, "event=ready")
        procs[name] = p
        return p

    start_origin("origin-a")
    start_origin("origin-b")
    tally = Tally()
    t0 = time.monotonic()
    deadline = t0 + SECONDS
    clients = [asyncio.create_task(client_loop(i, public_port, deadline, tally))
               for i in range(CLIENTS)]
    samples, restarts = [], 0
    next_restart = t0 + RESTART_EVERY
    turn = 0
    while time.monotonic() < deadline:
        await asyncio.sleep(SAMPLE_EVERY)
        now = time.monotonic()
        row = {"t_s": round(now - t0, 1), "ok": sum(tally.ok.values()), "cancelled":
               tally.cancelled, "failed": len(tally.failed)}
        for name, p in procs.items():
            s = proc_sample(p.pid)
            if s is not None:
                row[f"{name}_rss"], row[f"{name}_fds"] = s
        samples.append(row)
        print(json.dumps({"soak_sample": row}), flush=True)
        if now >= next_restart and now < deadline - 40:
            name = ("origin-a", "origin-b")[turn % 2]
            turn += 1
            p = procs.pop(name)
            p.send_signal(signal.SIGTERM)  # drains: its streams finish, then it exits
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, p.wait, 60)
            await loop.run_in_executor(None, start_origin, name)  # waits for its ready line
            restarts += 1
            next_restart = now + RESTART_EVERY
    await asyncio.gather(*clients, return_exceptions=True)
    for p in procs.values():
        p.send_signal(signal.SIGTERM)
    for p in procs.values():
        p.wait(60)
    server.close()

    after = [r for r in samples if r["t_s"] >= WARMUP and "edged_rss" in r]
    third = max(1, len(after) // 3)
    first, last = after[:third], after[-third:]
    avg = lambda rows, k: sum(r[k] for r in rows) / len(rows)  # noqa: E731
    rss0, rss1 = avg(first, "edged_rss"), avg(last, "edged_rss")
    fd0, fd1 = avg(first, "edged_fds"), avg(last, "edged_fds")
    grew_rss = rss1 > rss0 * 1.25 and rss1 - rss0 > 4 * 1024 * 1024
    grew_fds = fd1 - fd0 > 50
    summary = {"seconds": SECONDS, "clients": CLIENTS, "completed": tally.ok,
               "cancelled": tally.cancelled, "failed": len(tally.failed),
               "bytes_verified": tally.bytes, "origin_restarts": restarts,
               "edged_rss_first_third": int(rss0), "edged_rss_last_third": int(rss1),
               "edged_fds_first_third": fd0, "edged_fds_last_third": fd1,
               "edged_exit": edged.returncode, "logs": str(tmp)}
    print(json.dumps({"soak_summary": summary}), flush=True)
    for f in tally.failed[:20]:
        print("failed:", f, file=sys.stderr)
    bad = tally.failed or grew_rss or grew_fds or edged.returncode != 0
    return 1 if bad else 0


CHILDREN = []


def kill_children():
    for p in CHILDREN:
        if p.poll() is None:
            p.kill()
            p.wait(10)


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    finally:
        kill_children()  # a failed or interrupted run leaves no process behind
