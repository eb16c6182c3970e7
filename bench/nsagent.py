#!/usr/bin/env python3
"""nsagent.py: the in-namespace half of bench/netns.py, one process per role.

    ip netns exec NS /usr/bin/python3 bench/nsagent.py

Reads one JSON command per line on stdin and answers with one JSON line on stdout carrying the
command's "id" as "re"; services also print events ({"ev": ...}) as things happen. Stops when
stdin closes (its parent went away) and bounds every wait by a deadline. Standard library only.

Every connection to a `serve` listener starts with a 9-byte header, a kind byte and a u64
argument (network order), so one listener serves every workload:

    D  flood download source: send forever              U  flood upload sink: read forever
    V  victim download (arg: trial id): send 256 KiB blocks forever, log (time, bytes sent)
       after each send; when a send fails, print {"ev": "victim", ...} with the log
    W  victim upload (arg: trial id): read forever, log (time, bytes read), print
       {"ev": "progress"} once PROGRESS bytes are in, {"ev": "victim"} at the reset (or EOF)
    E  echo (for the round-trip probe)                   S  send arg bytes, then FIN
    K  read arg bytes, then answer one byte

Times are time.monotonic_ns(): CLOCK_MONOTONIC is one clock for the whole machine, so stamps
taken in two network namespaces compare directly.
"""
import errno
import json
import select
import socket
import struct
import sys
import threading
import time

sys.setswitchinterval(0.0005)  # time stamps: a thread that wakes takes the GIL back quickly

KiB = 1 << 10
BLOCK = b"\x33" * (256 * KiB)
FLOOD = b"\x5a" * (1 << 20)
HDR = struct.Struct("!cQ")
PROGRESS = 256 * KiB
SERVICE_TIMEOUT = 30.0
now = time.monotonic_ns

_out = threading.Lock()
stop_all = threading.Event()


def say(**kv):
    line = json.dumps(kv, separators=(",", ":"))
    with _out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def errname(e):
    if isinstance(e, socket.timeout):
        return "timeout"
    if isinstance(e, OSError) and e.errno in errno.errorcode:
        return errno.errorcode[e.errno]
    return type(e).__name__


def recv_exact(s, n):
    buf = b""
    for _ in range(n):  # each pass moves >= 1 byte
        if len(buf) >= n:
            break
        k = s.recv(n - len(buf))
        if not k:
            raise ConnectionError("eof in header")
        buf += k
    return buf


def reset_close(s):
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    s.close()


# ---------------------------------------------------------------------------------------------
# Services


class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.v = {"D": 0, "U": 0}

    def add(self, k, n):
        with self.lock:
            self.v[k] += n

    def take(self):
        with self.lock:
            v, self.v = self.v, {"D": 0, "U": 0}
        return v


counters = Counters()


def handle(c):
    try:
        c.settimeout(SERVICE_TIMEOUT)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        kind, arg = HDR.unpack(recv_exact(c, HDR.size))
        kind = kind.decode()
    except (OSError, ValueError, ConnectionError):
        c.close()
        return
    try:
        if kind == "D":
            c.settimeout(2.0)
            while not stop_all.is_set():
                counters.add("D", c.send(FLOOD))
        elif kind == "U":
            c.settimeout(2.0)
            buf = bytearray(1 << 20)
            while not stop_all.is_set():
                k = c.recv_into(buf)
                if k == 0:
                    break
                counters.add("U", k)
        elif kind == "V":
            victim_down(c, arg)
        elif kind == "W":
            victim_up(c, arg)
        elif kind == "E":
            while True:
                d = c.recv(64 * KiB)
                if not d:
                    break
                c.sendall(d)
        elif kind == "S":
            left = arg
            while left > 0:
                left -= c.send(memoryview(FLOOD)[: min(left, len(FLOOD))])
            c.shutdown(socket.SHUT_WR)
            c.recv(1)
        elif kind == "K":
            buf = bytearray(1 << 20)
            got = 0
            while got < arg:
                k = c.recv_into(buf)
                if k == 0:
                    break
                got += k
            c.sendall(b"k")
            c.recv(1)
    except OSError:
        pass
    finally:
        c.close()


def victim_down(c, tid):
    ts, cum = [], []
    sent, err, err_t = 0, None, None
    try:
        while True:
            sent += c.send(BLOCK)
            ts.append(now())
            cum.append(sent)
    except OSError as e:
        err_t, err = now(), errname(e)
    say(ev="victim", kind="V", id=tid, err=err, err_t=err_t, t=ts, cum=cum)


def victim_up(c, tid):
    ts, cum = [], []
    got, err, err_t, told = 0, None, None, False
    buf = bytearray(256 * KiB)
    try:
        while True:
            k = c.recv_into(buf)
            if k == 0:
                err_t, err = now(), "eof"
                break
            got += k
            ts.append(now())
            cum.append(got)
            if not told and got >= PROGRESS:
                told = True
                say(ev="progress", id=tid, t=ts[-1])
    except OSError as e:
        err_t, err = now(), errname(e)
    say(ev="victim", kind="W", id=tid, err=err, err_t=err_t, t=ts, cum=cum)


def serve(port, bind):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((bind, port))
    srv.listen(256)
    srv.settimeout(0.5)

    def loop():
        while not stop_all.is_set():
            try:
                c, _ = srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=handle, args=(c,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()


# ---------------------------------------------------------------------------------------------
# Clients


def dial(host, port, kind, arg=0, timeout=10.0):
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(HDR.pack(kind.encode(), arg))
    return s


class Flood:
    def __init__(self, host, port, n, kind):
        self.stop = threading.Event()
        self.moved = [0] * n
        self.socks = [dial(host, port, kind) for _ in range(n)]
        self.t0 = time.monotonic()
        self.threads = [threading.Thread(target=self.run, args=(i, kind), daemon=True)
                        for i in range(n)]
        for t in self.threads:
            t.start()

    def run(self, i, kind):
        s = self.socks[i]
        s.settimeout(1.0)
        buf = bytearray(1 << 20)
        try:
            while not self.stop.is_set():
                try:
                    if kind == "D":
                        k = s.recv_into(buf)
                        if k == 0:
                            break
                    else:
                        k = s.send(FLOOD)
                except socket.timeout:
                    continue
                self.moved[i] += k
        except OSError:
            pass

    def finish(self):
        self.stop.set()
        secs = time.monotonic() - self.t0
        for t in self.threads:
            t.join(5)
        for s in self.socks:
            reset_close(s)  # a flood has no ending to wait for
        return {"bytes": sum(self.moved), "seconds": round(secs, 3), "per_stream": self.moved}


class Pinger:
    """Back-to-back small exchanges on one TCP connection to an `E` service."""

    def __init__(self, host, port, size, gap):
        self.s = dial(host, port, "E")
        self.s.settimeout(10.0)
        self.size, self.gap = size, gap
        self.rtts = []
        self.stop = threading.Event()
        self.err = None
        self.th = threading.Thread(target=self.run, daemon=True)
        self.th.start()

    def run(self):
        msg = b"p" * self.size
        try:
            while not self.stop.is_set():
                t0 = now()
                self.s.sendall(msg)
                got = 0
                while got < self.size:
                    d = self.s.recv(self.size - got)
                    if not d:
                        raise ConnectionError("echo closed")
                    got += len(d)
                self.rtts.append((now() - t0) / 1e6)
                if self.gap:
                    time.sleep(self.gap)
        except OSError as e:
            self.err = errname(e)
        except ConnectionError:
            self.err = "eof"

    def finish(self, min_count, timeout):
        deadline = time.monotonic() + timeout
        while len(self.rtts) < min_count and self.err is None and time.monotonic() < deadline:
            time.sleep(0.01)
        self.stop.set()
        self.th.join(15)
        self.s.close()
        return {"rtts": [round(x, 4) for x in self.rtts], "err": self.err}


class Uploader:
    """A victim upload: sends until told to reset, from its own thread (which owns the socket,
    so the reset is a real close with SO_LINGER 0 and not a close under a blocked send)."""

    def __init__(self, host, port, tid):
        self.t_open = now()
        self.s = dial(host, port, "W", tid)
        self.s.setblocking(False)
        self.go_reset = threading.Event()
        self.done = threading.Event()
        self.sent, self.err, self.t_close = 0, None, None
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        mv = memoryview(BLOCK)
        deadline = time.monotonic() + 60
        while not self.go_reset.is_set() and time.monotonic() < deadline:
            if self.err is None:
                _, w, _ = select.select([], [self.s], [], 0.002)
                if w:
                    try:
                        self.sent += self.s.send(mv)
                    except BlockingIOError:
                        pass
                    except OSError as e:
                        self.err = errname(e)
            else:
                time.sleep(0.002)
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.t_close = now()
        self.s.close()
        self.done.set()


def victim_download(host, port, tid, need):
    t_conn = now()
    s = dial(host, port, "V", tid, timeout=30.0)
    s.settimeout(30.0)
    got = 0
    while got < need:
        k = len(s.recv(1 << 20))
        if k == 0:
            break
        got += k
    t_read = now()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    t_close = now()
    s.close()
    return {"t_close": t_close, "got": got, "read_ms": round((t_read - t_conn) / 1e6, 3)}


def throughput(host, port, kind, nbytes):
    t0 = time.monotonic()
    s = dial(host, port, kind, nbytes, timeout=60.0)
    s.settimeout(60.0)
    moved = 0
    if kind == "S":
        buf = bytearray(1 << 20)
        while True:
            k = s.recv_into(buf)
            if k == 0:
                break
            moved += k
    else:
        left = nbytes
        while left > 0:
            k = s.send(memoryview(FLOOD)[: min(left, len(FLOOD))])
            left -= k
            moved += k
        s.recv(1)  # the sink's answer: everything arrived
    dt = time.monotonic() - t0
    s.close()
    return {"bytes": moved, "seconds": round(dt, 4)}


# ---------------------------------------------------------------------------------------------


def main():
    floods, pingers, uploaders = {}, {}, {}
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        op, rid = cmd.get("op"), cmd.get("id")
        try:
            if op == "serve":
                serve(cmd["port"], cmd.get("bind", "0.0.0.0"))
                r = {}
            elif op == "counters":
                r = counters.take()
            elif op == "flood":
                floods[cmd["name"]] = Flood(cmd["host"], cmd["port"], cmd["n"], cmd["kind"])
                r = {}
            elif op == "flood_stop":
                r = floods.pop(cmd["name"]).finish()
            elif op == "ping_start":
                pingers[cmd["name"]] = Pinger(cmd["host"], cmd["port"], cmd.get("size", 64),
                                              cmd.get("gap", 0.005))
                r = {}
            elif op == "ping_stop":
                r = pingers.pop(cmd["name"]).finish(cmd.get("min", 0), cmd.get("timeout", 60))
            elif op == "victim_down":
                r = victim_download(cmd["host"], cmd["port"], cmd["tid"], cmd["need"])
            elif op == "victim_up_open":
                u = uploaders[cmd["tid"]] = Uploader(cmd["host"], cmd["port"], cmd["tid"])
                r = {"t_open": u.t_open}
            elif op == "victim_up_reset":
                u = uploaders.pop(cmd["tid"])
                u.go_reset.set()
                if not u.done.wait(10):
                    raise TimeoutError("uploader did not close")
                r = {"t_close": u.t_close, "sent": u.sent, "send_err": u.err}
            elif op == "throughput":
                r = throughput(cmd["host"], cmd["port"], cmd["kind"], cmd["bytes"])
            else:
                raise ValueError(f"unknown op {op!r}")
            say(re=rid, ok=True, **r)
        except Exception as e:  # reported to the parent, which decides
            say(re=rid, ok=False, error=f"{type(e).__name__}: {e}")
    stop_all.set()
    for f in floods.values():
        f.finish()


if __name__ == "__main__":
    main()
