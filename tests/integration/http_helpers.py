"""Helpers for the HTTP side of the tunnel (test_http.py), on top of tunnel.py.

Real parts only: a local HTTP origin (http.server.ThreadingHTTPServer with a handler written
here), a WebSocket echo origin (python3-websockets), raw sockets, http.client and curl. Every
server binds 127.0.0.1 and is stopped by the `services` fixture (each class here has the
`name` and `stop() -> bool` that fixture expects). Every loop is bounded in count and in time.
"""
import asyncio
import hashlib
import http.client
import http.server
import itertools
import json
import re
import socket
import subprocess
import threading
import time

from tunnel import (
    IO_TIMEOUT, KiB, LOCAL, MiB, free_port, listen_local, now_ns, pattern_chunk, pattern_iter,
)

HEAD_MAX = 16 * KiB  # the edge's request head limit (431 beyond)
MAX_LINES = 10_000  # header or chunk-size lines read by one parser
SSE_EVENTS = 5
SSE_GAP_S = 0.3


# ---------------------------------------------------------------------------------------------
# Starting edged with its HTTP listener, and originctl with HTTP routes


def start_http_edge(edge_fixture, origin_timeout="2s", head_timeout="2s", route_wait="1s",
                    extra=()):
    """edged with --http on a free 127.0.0.1 port (the port is retried if taken between pick
    and bind). Returns the tunnel.Edge with .http_port set; checks event=listening http=…
    route_wait: how long a request waits for its tunnel before 503 (and, just after start, an
    unknown host before 404); short here so error cases answer soon."""
    last = None
    for attempt in range(3):
        hp = free_port()
        argv = ["--http", f"{LOCAL}:{hp}", "--route-wait", route_wait]
        if origin_timeout is not None:
            argv += ["--origin-timeout", origin_timeout]
        if head_timeout is not None:
            argv += ["--head-timeout", head_timeout]
        try:
            e = edge_fixture(ports=1, extra=argv + list(extra))
        except AssertionError as exc:  # e.g. the HTTP port was taken meanwhile
            last = exc
            if not re.search(r"in use|EADDRINUSE", str(exc), re.I):
                raise
            continue
        ev = e.proc.events("listening")[-1]
        assert ev.get("http") == f"{LOCAL}:{hp}", f"event=listening without http=: {ev}"
        e.http_port = hp
        return e
    raise last


def http_route_args(routes, proxy_protocol=False):
    """originctl flags for {pattern: local_port}."""
    argv = []
    for pattern, port in routes.items():
        argv += ["--http", f"{pattern}=http://{LOCAL}:{port}"]
    if proxy_protocol:
        argv.append("--proxy-protocol")
    return argv


def start_http_origin(origin_fixture, e, token, routes, name=None, proxy_protocol=False,
                      ready=True, extra=()):
    """originctl serving {pattern: local_port} over HTTP (tunnel.Origin with no TCP route).
    With ready, waits for the origin's event=ready and, on the edge, for event=http_route of
    every pattern (tunnel=name when given)."""
    o = origin_fixture(e, token, {}, ready=ready,
                       extra=http_route_args(routes, proxy_protocol) + list(extra))
    if ready:
        for pattern in routes:
            match = {"host": pattern.lower()}
            if name is not None:
                match["tunnel"] = name
            e.proc.wait_event("http_route", **match)
    return o


# ---------------------------------------------------------------------------------------------
# HTTP/1.1 on raw sockets: requests and a small response parser


def request_bytes(method, path, host, headers=(), body=b""):
    lines = [f"{method} {path} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{k}: {v}" for k, v in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Response:
    def __init__(self, status, reason, headers, body, raw_head):
        self.status = status
        self.reason = reason
        self.headers = headers  # [(lower-case name, value)]
        self.body = body
        self.raw_head = raw_head

    def header(self, name):
        vals = [v for k, v in self.headers if k == name.lower()]
        return vals[-1] if vals else None

    def tokens(self, name):
        """The comma-separated, lower-cased tokens of every `name` header."""
        out = []
        for k, v in self.headers:
            if k == name.lower():
                out += [t.strip().lower() for t in v.split(",") if t.strip()]
        return out

    def __repr__(self):
        return f"<HTTP {self.status} {self.reason!r} {self.headers} body={self.body[:80]!r}>"


def parse_response(buf, at_eof=False):
    """One response at the start of buf: (Response, bytes consumed), or None if incomplete.
    Bodies: Content-Length, chunked, or (at_eof) up to the close."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).decode("latin-1")
    lines = head.split("\r\n")
    m = re.fullmatch(r"HTTP/1\.[01] (\d{3})(?: (.*))?", lines[0])
    assert m, f"bad status line {lines[0]!r}"
    headers = []
    for line in lines[1:MAX_LINES]:
        k, sep, v = line.partition(":")
        assert sep, f"bad header line {line!r}"
        headers.append((k.strip().lower(), v.strip()))
    resp = Response(int(m.group(1)), m.group(2) or "", headers, b"", head)
    pos = end + 4
    te = resp.tokens("transfer-encoding")
    cl = resp.header("content-length")
    if resp.status in (204, 304) or 100 <= resp.status < 200:
        return resp, pos
    if "chunked" in te:
        body = bytearray()
        for _ in range(MAX_LINES):
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                return None
            size = int(bytes(buf[pos:nl]).split(b";")[0], 16)
            pos = nl + 2
            if size == 0:
                # trailers, then the empty line
                for _ in range(MAX_LINES):
                    nl = buf.find(b"\r\n", pos)
                    if nl < 0:
                        return None
                    line, pos = buf[pos:nl], nl + 2
                    if not line:
                        resp.body = bytes(body)
                        return resp, pos
                raise AssertionError("too many trailer lines")
            if len(buf) < pos + size + 2:
                return None
            body += buf[pos:pos + size]
            pos += size + 2
        raise AssertionError("too many chunks")
    if cl is not None:
        n = int(cl)
        if len(buf) < pos + n:
            return None
        resp.body = bytes(buf[pos:pos + n])
        return resp, pos + n
    if not at_eof:
        return None
    resp.body = bytes(buf[pos:])
    return resp, len(buf)


def recv_some(sock, deadline, n=64 * KiB):
    """One recv before the monotonic deadline: bytes, b'' at EOF; an OSError propagates."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise AssertionError("read timed out")
    sock.settimeout(min(left, IO_TIMEOUT))
    try:
        return sock.recv(n)
    except socket.timeout:
        raise AssertionError("read timed out")


def read_responses(sock, count, timeout=60.0, limit=64 * MiB):
    """Read `count` responses in order from sock (pipelined or not). Returns (responses,
    leftover bytes, how the read ended: None, 'eof' or an errno name)."""
    deadline = time.monotonic() + timeout
    buf = bytearray()
    out = []
    how = None
    for _ in range(limit // 1024 + 100):  # each pass moves >= 1 byte or ends
        for _ in range(count):
            if len(out) == count:
                break
            got = parse_response(buf, at_eof=how is not None)
            if got is None:
                break
            resp, used = got
            out.append(resp)
            del buf[:used]
        if len(out) == count or how is not None:
            break
        try:
            data = recv_some(sock, deadline)
        except OSError as e:
            how = type(e).__name__
            continue
        if not data:
            how = "eof"
            continue
        buf += data
        assert len(buf) <= limit, f"more than {limit} bytes unparsed"
    assert len(out) == count, \
        f"{len(out)} of {count} responses, then {how}; rest {bytes(buf[:200])!r}"
    return out, bytes(buf), how


def exchange(port, data, timeout=30.0, shut_wr=False):
    """Connect, send `data`, read one response. Returns (Response, the socket)."""
    s = socket.create_connection((LOCAL, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(data)
    if shut_wr:
        s.shutdown(socket.SHUT_WR)
    (resp,), rest, how = read_responses(s, 1, timeout)
    return resp, s


def wait_eof(sock, timeout):
    """After a response: read until the peer closes; returns ('eof' | errno name, extra bytes).
    Fails if still open after `timeout` s."""
    deadline = time.monotonic() + timeout
    extra = 0
    for _ in range(100_000):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            data = sock.recv(64 * KiB)
        except socket.timeout:
            break
        except OSError as e:
            return type(e).__name__, extra
        if not data:
            return "eof", extra
        extra += len(data)
    raise AssertionError(f"connection still open {timeout:.0f} s after the answer "
                         f"({extra} more bytes)")


def get(port, host, path, timeout=60.0, headers=None, method="GET", body=None):
    """One request with http.client on a fresh connection: (status, headers, body)."""
    c = http.client.HTTPConnection(LOCAL, port, timeout=timeout)
    try:
        hdrs = {"Host": host}
        hdrs.update(headers or {})
        c.request(method, path, body=body, headers=hdrs)
        r = c.getresponse()
        return r.status, r.getheaders(), r.read()
    finally:
        c.close()


def run_threads(n, fn, timeout):
    """fn(i) in n threads at once; waits at most `timeout` s in all. Returns (results,
    failures [(i, repr)], unfinished count)."""
    results = [None] * n
    failures = []
    lock = threading.Lock()

    def body(i):
        try:
            results[i] = fn(i)
        except BaseException as exc:  # reported to the test
            with lock:
                failures.append((i, repr(exc)))

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return results, failures, sum(1 for t in threads if t.is_alive())


# ---------------------------------------------------------------------------------------------
# curl


def curl(args, max_time=120):
    """curl as a subprocess with --max-time; returns CompletedProcess (text)."""
    argv = ["curl", "--silent", "--show-error", "--max-time", str(max_time),
            "--noproxy", "*"] + [str(a) for a in args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=max_time + 30)


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for _ in range(1 << 20):
            b = f.read(MiB)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# The local HTTP origin


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024  # hundreds of streams open at once
    allow_reuse_address = True


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, chunked
    disable_nagle_algorithm = True
    timeout = 120  # an idle keep-alive connection (stop() also shuts sockets down)
    server_version = "test-origin"

    def log_message(self, fmt, *args):
        pass

    # -- connection bookkeeping
    def setup(self):
        super().setup()
        o = self.server.origin
        with o.lock:
            self.conn_id = next(o.conn_seq)
            self.nth = 0
            o.open_socks.add(self.connection)
            o.active += 1
            o.max_active = max(o.max_active, o.active)

    def finish(self):
        o = self.server.origin
        try:
            super().finish()
        finally:
            with o.lock:
                o.open_socks.discard(self.connection)
                o.active -= 1

    # -- helpers
    def _record(self, **kw):
        self.nth += 1
        rec = {"method": self.command, "path": self.path, "conn": self.conn_id,
               "nth": self.nth, "host": self.headers.get("Host"), "peer": self.client_address,
               "headers": list(self.headers.items()), "start_ns": now_ns()}
        rec.update(kw)
        o = self.server.origin
        with o.lock:
            o.requests.append(rec)
        return rec

    def _send(self, status, body, ctype="application/octet-stream", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status=200):
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _read_body(self, rec):
        """The request body (Content-Length or chunked), hashed; sets rec fields."""
        h = hashlib.sha256()
        count = 0
        te = self.headers.get("Transfer-Encoding", "").lower()
        if "chunked" in te:
            rec["chunked"] = True
            sizes = []
            for _ in range(1 << 20):
                line = self.rfile.readline(1024)
                assert line.endswith(b"\r\n"), f"bad chunk size line {line!r}"
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    for _ in range(MAX_LINES):  # trailers
                        if self.rfile.readline(8192) in (b"\r\n", b""):
                            break
                    break
                sizes.append(size)
                left = size
                for _ in range(size):  # each read moves >= 1 byte
                    if left == 0:
                        break
                    b = self.rfile.read(min(left, 256 * KiB))
                    assert b, "EOF inside a chunk"
                    h.update(b)
                    count += len(b)
                    left -= len(b)
                assert self.rfile.read(2) == b"\r\n", "chunk not followed by CRLF"
            rec["chunk_sizes"] = sizes
        else:
            rec["chunked"] = False
            left = int(self.headers.get("Content-Length", "0"))
            for _ in range(left + 1):
                if left == 0:
                    break
                b = self.rfile.read(min(left, 256 * KiB))
                assert b, f"EOF with {left} body bytes missing"
                h.update(b)
                count += len(b)
                left -= len(b)
        rec["count"] = count
        rec["sha256"] = h.hexdigest()
        return count, h.hexdigest()

    # -- routes
    def do_GET(self):
        path = self.path.split("?")[0]
        m = re.fullmatch(r"/blob/(\d+)/(\d+)", path)
        if m:
            return self._blob(int(m.group(1)), int(m.group(2)))
        m = re.fullmatch(r"/small/(\d+)", path)
        if m:  # 1 MiB, distinct per number
            rec = self._record()
            body = pattern_chunk(int(m.group(1)), 0)
            rec["sha256"] = hashlib.sha256(body).hexdigest()
            return self._send(200, body)
        if path == "/sse":
            return self._sse()
        m = re.fullmatch(r"/late/(\d+)ms/(\d+)x(\d+)ms", path)
        if m:
            return self._late(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        if path == "/endless":
            return self._endless()
        rec = self._record()
        self._json({"origin": self.server.origin.label, "path": self.path,
                    "host": rec["host"], "conn": self.conn_id, "nth": self.nth})

    def do_HEAD(self):
        self.do_GET()

    def do_POST(self):
        rec = self._record()
        expect = self.headers.get("Expect")
        count, digest = self._read_body(rec)
        self._json({"origin": self.server.origin.label, "count": count, "sha256": digest,
                    "chunked": rec["chunked"], "expect": expect, "conn": self.conn_id})

    do_PUT = do_POST

    def _blob(self, seed, size):
        rec = self._record(sent=0)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if self.command == "HEAD":
            return
        for chunk in pattern_iter(seed, size):
            self.wfile.write(chunk)
            rec["sent"] += len(chunk)

    def _sse(self):
        """5 events, SSE_GAP_S apart, each in its own chunk written at once; the write times
        are recorded (monotonic ns, the test shares the clock)."""
        rec = self._record(write_ns=[], end_ns=None, error=None)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for i in range(SSE_EVENTS):
                if i:
                    time.sleep(SSE_GAP_S)
                ev = f"id: {i}\nevent: tick\ndata: event-{i}\n\n".encode()
                rec["write_ns"].append(now_ns())  # just before the bytes leave
                self.wfile.write(b"%x\r\n%s\r\n" % (len(ev), ev))
            time.sleep(SSE_GAP_S)
            rec["end_ns"] = now_ns()
            self.wfile.write(b"0\r\n\r\n")
        except OSError as e:
            rec["error"] = type(e).__name__
            self.close_connection = True

    def _late(self, delay_ms, pieces, gap_ms):
        """Silent for delay_ms, then the head and `pieces` 1 KiB chunks gap_ms apart."""
        rec = self._record(error=None)
        time.sleep(delay_ms / 1000)
        body = pattern_chunk(92, 0)[:KiB]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(pieces * len(body)))
        self.end_headers()
        try:
            for i in range(pieces):
                if i:
                    time.sleep(gap_ms / 1000)
                self.wfile.write(body)
        except OSError as e:
            rec["error"] = type(e).__name__
            self.close_connection = True

    def _endless(self):
        """Writes 8 KiB every 2 ms (slowly but continuously, never blocking for long) until the
        connection fails, or 120 s / 100k writes. Records bytes sent and when a write failed."""
        rec = self._record(sent=0, error=None, error_ns=None, last_write_ns=None, writes=0)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        piece = pattern_chunk(91, 0)[:8 * KiB]
        frame = b"%x\r\n%s\r\n" % (len(piece), piece)
        deadline = time.monotonic() + 120
        try:
            for _ in range(100_000):
                if time.monotonic() > deadline or self.server.origin.stopping.is_set():
                    break
                self.wfile.write(frame)
                rec["sent"] += len(piece)
                rec["writes"] += 1
                rec["last_write_ns"] = now_ns()
                time.sleep(0.002)
        except OSError as e:
            rec["error_ns"] = now_ns()
            rec["error"] = type(e).__name__
        self.close_connection = True


class HttpOrigin:
    """A ThreadingHTTPServer on 127.0.0.1:0 with the routes above:

        GET  /blob/SEED/SIZE   SIZE bytes of tunnel.pattern stream SEED (Content-Length)
        GET  /small/N          1 MiB, pattern_chunk(N, 0)
        GET  /sse              server-sent events (chunked), write times recorded
        GET  /late/Dms/NxGms   silent D ms, then N KiB, one per G ms (Content-Length)
        GET  /endless          endless chunked body, 8 KiB / 2 ms, failure recorded
        GET  other             JSON: origin label, path, host, connection id, nth on it
        POST/PUT any           body (Content-Length or chunked) hashed; JSON count, sha256

    .requests holds one dict per request (path, conn, nth, host, peer, headers, …)."""

    name = "http-origin"

    def __init__(self, label="origin", port=0):
        self.label = label
        self.lock = threading.Lock()
        self.requests = []
        self.conn_seq = itertools.count()
        self.open_socks = set()
        self.active = 0
        self.max_active = 0
        self.stopping = threading.Event()
        self.server = _Server((LOCAL, port), _Handler)
        self.server.origin = self
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.1}, daemon=True,
                                       name=f"http-origin-{label}")
        self.thread.start()

    def find(self, path=None, prefix=None):
        with self.lock:
            return [r for r in self.requests
                    if (path is None or r["path"] == path)
                    and (prefix is None or r["path"].startswith(prefix))]

    def stop(self, timeout=5.0):
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout)
        with self.lock:
            socks = list(self.open_socks)
        for s in socks:  # wakes handlers blocked in recv / send
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.02) + 10):
            if self.active == 0 or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        return self.active == 0 and not self.thread.is_alive()


# ---------------------------------------------------------------------------------------------
# The WebSocket echo origin (python3-websockets, asyncio in its own thread)


class WsEchoOrigin:
    """websockets.serve on 127.0.0.1:0: echoes every message (text stays text, bytes stay
    bytes). .hosts records the Host header of every handshake."""

    name = "ws-echo"

    def __init__(self, timeout=10.0):
        import websockets  # python3-websockets (Debian)

        self._ws = websockets
        self.hosts = []
        self.messages = 0
        self.port = None
        self.error = None
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop_fut = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="ws-echo")
        self.thread.start()
        if not self._ready.wait(timeout) or self.port is None:
            raise AssertionError(f"websocket origin did not start: {self.error}")

    async def _echo(self, ws):
        self.hosts.append(ws.request_headers.get("Host"))
        async for msg in ws:
            self.messages += 1
            await ws.send(msg)

    def _run(self):
        asyncio.set_event_loop(self._loop)

        async def main():
            self._stop_fut = self._loop.create_future()
            async with self._ws.serve(self._echo, sock=listen_local(), max_size=8 * MiB,
                                      close_timeout=5) as server:
                self.port = server.sockets[0].getsockname()[1]
                self._ready.set()
                await self._stop_fut

        try:
            self._loop.run_until_complete(main())
        except BaseException as e:  # reported through .error / the start check
            self.error = repr(e)
            self._ready.set()
        finally:
            self._loop.close()

    def stop(self, timeout=10.0):
        def done():
            if self._stop_fut is not None and not self._stop_fut.done():
                self._stop_fut.set_result(None)

        try:
            self._loop.call_soon_threadsafe(done)
        except RuntimeError:  # the loop is already closed
            pass
        self.thread.join(timeout)
        return not self.thread.is_alive()


# ---------------------------------------------------------------------------------------------
# PROXY protocol v2


PROXY_V2_SIG = bytes.fromhex("0D0A0D0A000D0A515549540A")


def parse_proxy_v2(b):
    """(src_ip, src_port, dst_ip, dst_port) of a PROXY v2 PROXY/TCP4 header (28 bytes)."""
    assert len(b) >= 16, b.hex()
    assert b[:12] == PROXY_V2_SIG, f"no PROXY v2 signature: {b[:16].hex()}"
    assert b[12] == 0x21, f"version/command {b[12]:#04x}, want 0x21 (v2, PROXY)"
    assert b[13] == 0x11, f"family/protocol {b[13]:#04x}, want 0x11 (TCP over IPv4)"
    length = int.from_bytes(b[14:16], "big")
    assert length == 12, f"address length {length}, want 12"
    assert len(b) >= 28
    src = socket.inet_ntoa(b[16:20])
    dst = socket.inet_ntoa(b[20:24])
    sport = int.from_bytes(b[24:26], "big")
    dport = int.from_bytes(b[26:28], "big")
    return src, sport, dst, dport
