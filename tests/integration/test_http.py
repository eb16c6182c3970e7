"""The HTTP side of the tunnel, end to end: real edged and originctl processes, public clients
(curl, http.client, python3-websockets, raw sockets) talking HTTP/1.1 to edged's --http
listener, local origins (http.server, websockets, raw sockets) in this process, all on
127.0.0.1.

edged reads a request head only to route it by Host, forwards it unchanged and then pipes bytes
both ways; the errors it answers itself are small complete responses with Connection: close.
Figures are printed as `MEASURE key=value` lines for `pytest -s`, never asserted; the time
bounds that are asserted are about behaviour (an event arrives before the next one is written,
a 504 does not come before the origin timeout, a reset reaches the origin at all).
"""
import hashlib
import http.client
import json
import random
import shlex
import socket
import threading
import time

import pytest

from http_helpers import (
    SSE_EVENTS, HttpOrigin, WsEchoOrigin, curl, exchange, file_sha256, get, parse_proxy_v2,
    read_responses, recv_some, request_bytes, run_threads, start_http_edge, start_http_origin,
    wait_eof,
)
from tunnel import (
    KiB, LOCAL, MiB, FuncService, Proc, abort, connect, decode_token, free_ports, measure,
    now_ns, pattern_chunk, pattern_digest, pattern_iter, percentile, wait_until,
)

XFER_TIMEOUT = 150.0  # one 32 MiB transfer, or 200 parallel 1 MiB ones, under ASan


def serve_http(edge, origin, routes, name="web", hosts=None, short_timeouts=False,
               **origin_kw):
    """An edge with an HTTP listener, a token for `hosts` (default: the route patterns) and an
    origin serving {pattern: local_port}. short_timeouts: --origin-timeout 2s --head-timeout 2s
    (else edged's defaults, 30 s and 10 s: a transfer test must not depend on them)."""
    t = "2s" if short_timeouts else None
    e = start_http_edge(edge, origin_timeout=t, head_timeout=t)
    token = e.token(name, hosts=hosts if hosts is not None else list(routes))
    o = start_http_origin(origin, e, token, routes, name=name, **origin_kw)
    return e, o


def ok_json(port, host, path, **kw):
    status, headers, body = get(port, host, path, **kw)
    assert status == 200, (status, headers, body[:200])
    return json.loads(body)


# ---------------------------------------------------------------------------------------------
# 1. Large bodies with curl


def test_curl_download_32mib(edge, origin, services, tmp_path):
    size, seed = 32 * MiB, 101
    web = services.add(HttpOrigin("files"))
    e, _ = serve_http(edge, origin, {"files.example.test": web.port})
    out = tmp_path / "download.bin"
    host = f"files.example.test:{e.http_port}"
    r = curl(["--resolve", f"{host}:{LOCAL}", "--output", out,
              "--write-out", "%{http_code} %{size_download} %{speed_download}",
              f"http://{host}/blob/{seed}/{size}"], max_time=XFER_TIMEOUT)
    assert r.returncode == 0, f"curl exited {r.returncode}: {r.stderr}"
    code, count, speed = r.stdout.split()
    measure(http_curl_download_MBps=float(speed) / MiB, bytes=int(count))
    assert code == "200"
    assert int(count) == size == out.stat().st_size
    assert file_sha256(out) == pattern_digest(seed, size)
    (rec,) = web.find(prefix="/blob/")
    assert rec["host"] == host, "the Host header reaches the origin unchanged"
    assert rec["sent"] == size


def test_curl_upload_32mib(edge, origin, services, tmp_path):
    size, seed = 32 * MiB, 102
    web = services.add(HttpOrigin("uploads"))
    e, _ = serve_http(edge, origin, {"up.example.test": web.port})
    src = tmp_path / "upload.bin"
    with open(src, "wb") as f:
        for chunk in pattern_iter(seed, size):
            f.write(chunk)
    reply = tmp_path / "reply.json"
    host = f"up.example.test:{e.http_port}"
    r = curl(["--resolve", f"{host}:{LOCAL}", "--data-binary", f"@{src}",
              "--header", "Content-Type: application/octet-stream", "--output", reply,
              "--write-out", "%{http_code} %{size_upload} %{speed_upload}",
              f"http://{host}/upload"], max_time=XFER_TIMEOUT)
    assert r.returncode == 0, f"curl exited {r.returncode}: {r.stderr}"
    code, count, speed = r.stdout.split()
    measure(http_curl_upload_MBps=float(speed) / MiB, bytes=int(count))
    assert code == "200", (code, reply.read_text(errors="replace")[:300])
    got = json.loads(reply.read_text())
    print(f"origin saw Expect: {got['expect']!r}")  # curl sends 100-continue for big bodies
    assert got["count"] == size
    assert got["sha256"] == pattern_digest(seed, size)
    assert not got["chunked"]


# ---------------------------------------------------------------------------------------------
# 2. Hundreds of requests at once


N_PARALLEL = 200


def test_parallel_downloads(edge, origin, services):
    web = services.add(HttpOrigin("gallery"))
    e, _ = serve_http(edge, origin, {"gallery.example.test": web.port})

    barrier = threading.Barrier(N_PARALLEL, timeout=60)

    def one(i):
        c = http.client.HTTPConnection(LOCAL, e.http_port, timeout=120)
        try:
            c.connect()
            barrier.wait()  # all 200 connections are open at edged before any request
            c.request("GET", f"/small/{2000 + i}", headers={"Host": "gallery.example.test"})
            r = c.getresponse()
            body = r.read()
        finally:
            c.close()
        assert r.status == 200, (i, r.status, body[:200])
        assert len(body) == MiB, (i, len(body))
        return hashlib.sha256(body).hexdigest()

    t0 = now_ns()
    results, failures, unfinished = run_threads(N_PARALLEL, one, XFER_TIMEOUT)
    secs = (now_ns() - t0) / 1e9
    measure(http_parallel_downloads=N_PARALLEL, seconds=secs,
            MBps=N_PARALLEL / secs, origin_max_concurrent=web.max_active)
    assert not failures, f"{len(failures)} downloads failed, e.g. {failures[:5]}"
    assert unfinished == 0, f"{unfinished} downloads unfinished after {XFER_TIMEOUT:.0f} s"
    for i, digest in enumerate(results):
        assert digest == hashlib.sha256(pattern_chunk(2000 + i, 0)).hexdigest(), \
            f"download {i}: wrong content"
    assert len(web.find(prefix="/small/")) == N_PARALLEL


def test_parallel_uploads(edge, origin, services):
    web = services.add(HttpOrigin("uploads"))
    e, _ = serve_http(edge, origin, {"photos.example.test": web.port})
    barrier = threading.Barrier(N_PARALLEL, timeout=60)

    def one(i):
        body = pattern_chunk(3000 + i, 0)
        c = http.client.HTTPConnection(LOCAL, e.http_port, timeout=120)
        try:
            c.connect()
            barrier.wait()  # all 200 connections are open at edged before any request
            c.request("PUT", f"/photo/{i}", body=body,
                      headers={"Host": "photos.example.test",
                               "Content-Type": "application/octet-stream"})
            r = c.getresponse()
            reply = r.read()
        finally:
            c.close()
        assert r.status == 200, (i, r.status, reply[:200])
        got = json.loads(reply)
        assert got["count"] == MiB, (i, got)
        assert got["sha256"] == hashlib.sha256(body).hexdigest(), f"upload {i}: corrupted"
        return got

    t0 = now_ns()
    results, failures, unfinished = run_threads(N_PARALLEL, one, XFER_TIMEOUT)
    secs = (now_ns() - t0) / 1e9
    measure(http_parallel_uploads=N_PARALLEL, seconds=secs,
            MBps=N_PARALLEL / secs, origin_max_concurrent=web.max_active)
    assert not failures, f"{len(failures)} uploads failed, e.g. {failures[:5]}"
    assert unfinished == 0, f"{unfinished} uploads unfinished after {XFER_TIMEOUT:.0f} s"
    paths = sorted(r["path"] for r in web.find(prefix="/photo/"))
    assert paths == sorted(f"/photo/{i}" for i in range(N_PARALLEL))


# ---------------------------------------------------------------------------------------------
# 3. Keep-alive and pipelining


def test_keep_alive(edge, origin, services):
    web = services.add(HttpOrigin("ka"))
    e, _ = serve_http(edge, origin, {"ka.example.test": web.port}, short_timeouts=True)
    c = http.client.HTTPConnection(LOCAL, e.http_port, timeout=60)
    sock = None
    seen = []
    try:
        for i in range(6):
            if i == 3:  # a body in the middle, then a large response
                body = pattern_chunk(33, 0)[:100 * KiB]
                c.request("POST", f"/ka/{i}", body=body, headers={"Host": "ka.example.test"})
            elif i == 4:
                c.request("GET", "/small/34", headers={"Host": "ka.example.test"})
            else:
                if i == 5:  # idle longer than the head and origin timeouts (2 s): no 408/504
                    time.sleep(2.5)
                c.request("GET", f"/ka/{i}", headers={"Host": "ka.example.test"})
            r = c.getresponse()
            data = r.read()
            assert r.status == 200, (i, r.status, data[:200])
            assert not r.will_close, f"request {i}: the connection is to close"
            if sock is None:
                sock = c.sock
            assert c.sock is sock, f"request {i}: http.client opened a new connection"
            if i == 3:
                assert json.loads(data)["sha256"] == hashlib.sha256(body).hexdigest()
            if i == 4:
                assert data == pattern_chunk(34, 0)
            seen.append(i)
    finally:
        c.close()
    recs = web.find()
    assert [r["nth"] for r in recs] == list(range(1, 7)), recs
    assert {r["conn"] for r in recs} == {recs[0]["conn"]}, \
        "the origin saw the requests on more than one connection"
    assert web.max_active == 1


def test_pipelined_requests(edge, origin, services):
    web = services.add(HttpOrigin("pipe"))
    e, _ = serve_http(edge, origin, {"pipe.example.test": web.port})
    host = "pipe.example.test"
    post_body = b"x" * 5000
    batch = (request_bytes("GET", "/p/0", host)
             + request_bytes("POST", "/p/1", host, body=post_body)
             + request_bytes("GET", "/small/35", host)
             + request_bytes("GET", "/p/3", host, headers=[("Connection", "close")]))
    s = connect(e.http_port)
    try:
        s.sendall(batch)  # all four at once: the first head arrives with three behind it
        resps, rest, how = read_responses(s, 4, timeout=60)
        if how is None:
            how, extra = wait_eof(s, 15)
            assert extra == 0
    finally:
        s.close()
    assert [r.status for r in resps] == [200] * 4, resps
    assert json.loads(resps[0].body)["path"] == "/p/0"
    got1 = json.loads(resps[1].body)
    assert got1["count"] == len(post_body)
    assert got1["sha256"] == hashlib.sha256(post_body).hexdigest()
    assert resps[2].body == pattern_chunk(35, 0)
    assert json.loads(resps[3].body)["path"] == "/p/3"
    assert rest == b"" and how == "eof", (rest[:100], how)
    recs = web.find()
    assert [r["path"] for r in recs] == ["/p/0", "/p/1", "/small/35", "/p/3"]
    assert [r["nth"] for r in recs] == [1, 2, 3, 4]
    assert len({r["conn"] for r in recs}) == 1


def test_request_then_half_close(edge, origin, services):
    """A client that half-closes right after its request still gets the whole response."""
    web = services.add(HttpOrigin("hc"))
    e, _ = serve_http(edge, origin, {"hc.example.test": web.port})
    for req, check in (
            (request_bytes("GET", "/small/36", "hc.example.test"),
             lambda r: r.body == pattern_chunk(36, 0)),
            (request_bytes("POST", "/hc", "hc.example.test", body=b"q" * 70_000),
             lambda r: json.loads(r.body)["count"] == 70_000)):
        s = connect(e.http_port)
        try:
            s.sendall(req)
            s.shutdown(socket.SHUT_WR)
            (resp,), rest, how = read_responses(s, 1, timeout=60)
        finally:
            s.close()
        assert resp.status == 200, resp
        assert check(resp), resp


def test_head_in_pieces(edge, origin, services):
    """A head trickling in byte by byte (within the head timeout) is routed normally."""
    web = services.add(HttpOrigin("slow"))
    e, _ = serve_http(edge, origin, {"trickle.example.test": web.port}, short_timeouts=True)
    req = request_bytes("GET", "/trickle", "trickle.example.test", headers=[("X-A", "b")])
    s = connect(e.http_port)
    try:
        for k in range(len(req)):  # about 80 bytes, 10 ms apart: well within 2 s
            s.sendall(req[k:k + 1])
            time.sleep(0.01)
        (resp,), _, _ = read_responses(s, 1, timeout=30)
    finally:
        s.close()
    assert resp.status == 200, resp
    assert json.loads(resp.body)["path"] == "/trickle"
    (rec,) = web.find("/trickle")
    assert dict(rec["headers"]).get("X-A") == "b"


def test_origin_timeout_only_until_first_byte(edge, origin, services):
    """--origin-timeout 2s bounds the wait for the origin's first byte, not the response:
    an origin that starts after 1 s and streams until about 4 s is answered in full."""
    web = services.add(HttpOrigin("late"))
    e, _ = serve_http(edge, origin, {"late.example.test": web.port}, short_timeouts=True)
    t0 = time.monotonic()
    status, headers, body = get(e.http_port, "late.example.test", "/late/1000ms/8x400ms")
    measure(http_late_response_s=time.monotonic() - t0)
    assert status == 200, (status, body[:200])
    assert body == pattern_chunk(92, 0)[:KiB] * 8
    (rec,) = web.find("/late/1000ms/8x400ms")
    assert rec["error"] is None


def test_upload_longer_than_origin_timeout(edge, origin, services):
    """An upload still flowing when --origin-timeout (2 s) passes, answered by the origin once
    its body is complete (after about 3.5 s), must get the origin's answer, not 504: the origin
    cannot answer before it has the body, and PRODUCT.md promises large uploads pass. (The
    contract's wording, "504 when the origin accepts but sends nothing within
    --origin-timeout", read literally would allow this 504: see the report.)"""
    web = services.add(HttpOrigin("slowup"))
    e, _ = serve_http(edge, origin, {"slowup.example.test": web.port}, short_timeouts=True)
    piece, pieces = b"u" * (16 * KiB), 36
    s = connect(e.http_port)
    sent = 0
    try:
        s.sendall(request_bytes("PUT", "/slow-upload", "slowup.example.test",
                                headers=[("Content-Length", str(len(piece) * pieces))]))
        for _ in range(pieces):  # 36 pieces, 100 ms apart: about 3.5 s
            s.sendall(piece)
            sent += len(piece)
            time.sleep(0.1)
        (resp,), _, _ = read_responses(s, 1, timeout=30)
    except OSError as exc:
        try:  # what did edged answer before it cut the upload?
            (early,), _, _ = read_responses(s, 1, timeout=5)
        except (OSError, AssertionError) as exc2:
            early = repr(exc2)
        raise AssertionError(f"upload cut after {sent} bytes ({exc!r}); "
                             f"the client could read: {early}") from exc
    finally:
        s.close()
    assert resp.status == 200, f"after {sent} bytes sent: {resp}"
    assert json.loads(resp.body)["count"] == len(piece) * pieces


# ---------------------------------------------------------------------------------------------
# 4. Chunked upload


def test_chunked_upload(edge, origin, services):
    web = services.add(HttpOrigin("chunked"))
    e, _ = serve_http(edge, origin, {"chunk.example.test": web.port})
    data = b"".join(pattern_iter(44, 4 * MiB))
    sizes, pos = [], 0
    for k in range(10_000):
        if pos >= len(data):
            break
        n = min((1, 7, 100, 4096, 65536, 300_000, 1_000_000)[k % 7], len(data) - pos)
        sizes.append(n)
        pos += n

    def pieces():
        off = 0
        for n in sizes:
            yield data[off:off + n]
            off += n

    c = http.client.HTTPConnection(LOCAL, e.http_port, timeout=120)
    try:
        c.request("POST", "/chunked", body=pieces(), encode_chunked=True,
                  headers={"Host": "chunk.example.test", "Transfer-Encoding": "chunked"})
        r = c.getresponse()
        reply = r.read()
        assert r.status == 200, (r.status, reply[:200])
        got = json.loads(reply)
        # A second chunked request on the same connection, hand-written: an extension and a
        # trailer field, which edged must not touch either.
        raw = (b"POST /chunked2 HTTP/1.1\r\nHost: chunk.example.test\r\n"
               b"Transfer-Encoding: chunked\r\nTrailer: X-Check\r\n\r\n"
               b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Check: yes\r\n\r\n")
        c.sock.sendall(raw)
        r2 = http.client.HTTPResponse(c.sock, method="POST")
        r2.begin()
        got2 = json.loads(r2.read())
    finally:
        c.close()
    assert got["chunked"] and got["count"] == len(data)
    assert got["sha256"] == hashlib.sha256(data).hexdigest()
    rec = web.find("/chunked")[0]
    assert rec["chunk_sizes"] == sizes, "chunk boundaries changed on the way"
    assert got2["chunked"] and got2["sha256"] == hashlib.sha256(b"hello world").hexdigest()
    assert web.find("/chunked2")[0]["chunk_sizes"] == [5, 6]


# ---------------------------------------------------------------------------------------------
# 5. WebSocket


def test_websocket_echo(edge, origin, services):
    import asyncio

    import websockets

    ws_origin = services.add(WsEchoOrigin())
    e, _ = serve_http(edge, origin, {"chat.example.test": ws_origin.port})
    uri = f"ws://chat.example.test:{e.http_port}/chat"
    rng = random.Random(55)
    rounds = []

    async def session():
        async with websockets.connect(uri, host=LOCAL, port=e.http_port, open_timeout=30,
                                      close_timeout=10, ping_interval=None,
                                      max_size=8 * MiB) as ws:
            for i in range(12):
                text = f"message {i}: " + "h\u00e9llo \u2603 " * (i * 50)
                size = (1, 125, 126, 65535, 65536, MiB)[i % 6]
                blob = rng.randbytes(size)
                t0 = now_ns()
                await ws.send(text)
                got_text = await asyncio.wait_for(ws.recv(), 30)
                await ws.send(blob)
                got_blob = await asyncio.wait_for(ws.recv(), 30)
                rounds.append((now_ns() - t0) / 1e6)
                assert isinstance(got_text, str) and got_text == text, f"round {i}: text"
                assert isinstance(got_blob, bytes) and got_blob == blob, f"round {i}: binary"
            # Several messages in flight at once come back in order.
            burst = [f"burst {k}" for k in range(50)]
            for m in burst:
                await ws.send(m)
            back = [await asyncio.wait_for(ws.recv(), 30) for _ in burst]
            assert back == burst
        return ws.close_code

    code = asyncio.run(asyncio.wait_for(session(), 120))
    measure(http_ws_round_ms_p50=percentile(rounds, 50), rounds=len(rounds))
    assert code == 1000, f"close code {code}"
    assert ws_origin.hosts == [f"chat.example.test:{e.http_port}"]
    assert ws_origin.messages == 12 * 2 + 50


# ---------------------------------------------------------------------------------------------
# 6. Server-sent events


def test_server_sent_events(edge, origin, services):
    web = services.add(HttpOrigin("events"))
    e, _ = serve_http(edge, origin, {"events.example.test": web.port})
    s = connect(e.http_port)
    arrival = [None] * SSE_EVENTS
    buf = bytearray()
    deadline = time.monotonic() + 60
    try:
        s.sendall(request_bytes("GET", "/sse", "events.example.test",
                                headers=[("Accept", "text/event-stream")]))
        for _ in range(100_000):
            data = recv_some(s, deadline)
            t = now_ns()
            if not data:
                break
            buf += data
            for i in range(SSE_EVENTS):
                if arrival[i] is None and f"data: event-{i}\n\n".encode() in buf:
                    arrival[i] = t
            if buf.endswith(b"\r\n0\r\n\r\n"):
                break
    finally:
        s.close()
    assert buf.startswith(b"HTTP/1.1 200"), bytes(buf[:200])
    assert b"text/event-stream" in buf
    assert all(a is not None for a in arrival), f"events missing: {arrival} {bytes(buf)!r}"
    (rec,) = web.find("/sse")
    assert rec["error"] is None, rec
    w = rec["write_ns"]
    lat = [(arrival[i] - w[i]) / 1e6 for i in range(SSE_EVENTS)]
    measure(http_sse_latency_ms_p50=percentile(lat, 50), max=max(lat))
    for i in range(SSE_EVENTS - 1):
        assert arrival[i] < w[i + 1], \
            f"event {i} reached the client only after event {i + 1} was written (held back)"
    assert arrival[-1] < rec["end_ns"], "the last event arrived only with the end of the body"


# ---------------------------------------------------------------------------------------------
# 7. Error answers


def _silent(rec):
    """Accepts and never answers; reads until the peer closes (or 60 s)."""
    s = rec.sock
    deadline = time.monotonic() + 60
    for _ in range(100_000):
        try:
            data = recv_some(s, deadline)
        except (OSError, AssertionError) as exc:
            rec.fail(exc if isinstance(exc, OSError) else TimeoutError(str(exc)))
            return
        if not data:
            rec.eof_ns = now_ns()
            return
        rec.received += len(data)


ERROR_CASES = {
    # case: (status, the request bytes, or None for a case-specific request)
    "404_unknown_host": (404, request_bytes("GET", "/", "nobody.example.test")),
    "503_not_connected": (503, request_bytes("GET", "/", "gone.example.test")),
    "502_origin_refuses": (502, request_bytes("GET", "/", "refused.example.test")),
    # A body behind the head: the answer must not be lost to a reset over unread bytes.
    "502_with_body": (502, request_bytes("POST", "/", "refused.example.test",
                                         body=b"b" * (256 * KiB))),
    "504_origin_silent": (504, request_bytes("GET", "/", "silent.example.test")),
    "400_no_host": (400, b"GET / HTTP/1.1\r\nUser-Agent: test\r\n\r\n"),
    "400_bad_request_line": (400, b"NOT A REQUEST\r\nHost: ok.example.test\r\n\r\n"),
    "431_head_too_large": (431, b"GET / HTTP/1.1\r\nHost: ok.example.test\r\nX-Big: "
                           + b"a" * (20 * KiB) + b"\r\n\r\n"),
    "408_head_timeout": (408, b"GET / HTTP/1.1\r\nHost: ok.example.test\r\nX-Half: "),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_error_answer(case, edge, origin, services):
    status, request = ERROR_CASES[case]
    web = services.add(HttpOrigin("ok"))
    silent = services.add(FuncService(_silent))
    nothing_port = free_ports(1)[0]  # nothing listens there
    routes = {"ok.example.test": web.port, "refused.example.test": nothing_port,
              "silent.example.test": silent.port}
    e, o = serve_http(edge, origin, routes, short_timeouts=True)

    if case.startswith("503"):
        gone_web = services.add(HttpOrigin("gone"))
        token = e.token("gone", hosts=["gone.example.test"])
        gone = start_http_origin(origin, e, token, {"gone.example.test": gone_web.port},
                                 name="gone")
        assert ok_json(e.http_port, "gone.example.test", "/")["origin"] == "gone"
        gone.proc.stop()  # by PID
        # The edge learns of it from its tunnel sockets; until then a request may still be
        # routed to a socket on its way down. Poll (bounded) until the first 503.
        seen = []
        deadline = time.monotonic() + 20
        resp = s = None
        for _ in range(200):
            if time.monotonic() > deadline:
                break
            try:
                resp, s = exchange(e.http_port, request)
            except (OSError, AssertionError) as exc:  # e.g. a stream reset on the way down
                seen.append(repr(exc)[:80])
                time.sleep(0.1)
                continue
            seen.append(resp.status)
            if resp.status == 503:
                break
            s.close()
            time.sleep(0.1)
        print(f"answers after the origin stopped: {seen}")
        assert resp is not None and resp.status == 503, f"no 503 within 20 s: {seen}"
    else:
        t0 = time.monotonic()
        resp, s = exchange(e.http_port, request, timeout=30)
        waited = time.monotonic() - t0
        measure(**{f"http_{status}_answer_s": waited})
        if status in (408, 504):  # 2 s timeouts: an answer long before them is wrong
            assert waited >= 1.0, f"{status} after {waited:.2f} s, before the 2 s timeout"

    try:
        assert resp.status == status, resp
        assert "close" in resp.tokens("connection"), f"no Connection: close in {resp}"
        assert len(resp.body) < 4096, "an error answer is small"
        cl = resp.header("content-length")
        assert cl is None or int(cl) == len(resp.body)
        how, extra = wait_eof(s, 15)  # the edge closes after its answer
        assert (how, extra) == ("eof", 0), (how, extra)
    finally:
        s.close()

    if status == 504:
        (rec,) = silent.wait_conns(1)
        # The request did reach the origin, which got the head unchanged; after the 504
        # the stream is torn down on the origin's side too.
        wait_until(lambda: rec.eof_ns is not None or rec.error is not None, 15,
                   "the silent origin's connection to be closed after the 504")
        assert rec.received == len(request)
    if status in (400, 408, 431):
        assert not web.requests, "a refused head reached the origin"

    # edged is still up and still routes.
    assert e.proc.alive()
    assert ok_json(e.http_port, "ok.example.test", "/after")["origin"] == "ok"
    # ...and logged the answer it wrote.
    e.proc.wait_event("http_answer", 15, status=status)


# ---------------------------------------------------------------------------------------------
# 8. A host outside the token


@pytest.mark.parametrize("token_hosts,asked", [
    (["allowed.example.test"], "other.example.test"),
    (["*.example.test"], "deep.sub.example.test"),  # a wildcard covers one label only
])
def test_host_outside_token(token_hosts, asked, edge, origin, services):
    web = services.add(HttpOrigin("scoped"))
    e = start_http_edge(edge, origin_timeout=None, head_timeout=None)
    token = e.token("scoped", hosts=token_hosts)
    o = start_http_origin(origin, e, token, {asked: web.port}, name="scoped", ready=False)
    assert o.proc.wait_exit() == 3, o.proc.tail()
    refused = o.proc.events("refused")
    assert refused and {r.get("reason") for r in refused} == {"auth_scope"}, o.proc.tail()
    assert not o.proc.events("ready")
    e.proc.wait_event("handshake_refused", 15, reason="auth_scope")
    assert not e.proc.events("http_route"), "a refused tunnel got a route"
    resp, s = exchange(e.http_port, request_bytes("GET", "/", asked))
    s.close()
    assert resp.status == 404, resp
    assert not web.requests
    assert e.proc.alive()


# ---------------------------------------------------------------------------------------------
# Routing by Host


def test_host_routing(edge, origin, services):
    exact = services.add(HttpOrigin("exact"))
    wild = services.add(HttpOrigin("wild"))
    e, _ = serve_http(edge, origin, {"exact.example.test": exact.port,
                                     "*.wild.example.test": wild.port})
    cases = {
        "exact.example.test": "exact",
        f"exact.example.test:{e.http_port}": "exact",
        "EXACT.Example.TEST:8080": "exact",  # case-insensitive, port stripped
        "a.wild.example.test": "wild",
        "B-2.WILD.example.test:1": "wild",
        "a.b.wild.example.test": 404,  # one extra label only
        "wild.example.test": 404,
        "exact.example.test.evil": 404,
        "xexact.example.test": 404,
    }
    claims = decode_token(e.token("check", hosts=["exact.example.test", "*.wild.example.test"]))[1]
    assert sorted(claims["hosts"]) == ["*.wild.example.test", "exact.example.test"], claims
    for host, want in cases.items():
        resp, s = exchange(e.http_port, request_bytes("GET", "/route", host))
        s.close()
        if want == 404:
            assert resp.status == 404, (host, resp)
        else:
            assert resp.status == 200, (host, resp)
            got = json.loads(resp.body)
            assert got["origin"] == want, (host, got)
            assert got["host"] == host, "the Host header reaches the origin unchanged"


# ---------------------------------------------------------------------------------------------
# 9. A client that goes away mid-download


def test_mid_download_disconnect(edge, origin, services):
    web = services.add(HttpOrigin("video"))
    e, _ = serve_http(edge, origin, {"video.example.test": web.port})
    delays, after = [], []
    for i in range(3):
        s = connect(e.http_port)
        s.sendall(request_bytes("GET", "/endless", "video.example.test"))
        deadline = time.monotonic() + 30
        got = 0
        for _ in range(100_000):
            data = recv_some(s, deadline)
            assert data, f"round {i}: EOF after {got} bytes"
            got += len(data)
            if got >= 256 * KiB:
                break
        recs = wait_until(lambda: len(web.find("/endless")) > i and web.find("/endless"), 10,
                          "the origin's request record")
        rec = recs[i]
        sent_at_close = rec["sent"]
        t_close = now_ns()
        abort(s)  # abortive close: RST
        wait_until(lambda: rec["error"] is not None, 15,
                   f"round {i}: the origin's writes to fail after the client left "
                   f"(it wrote {rec['sent']} bytes)")
        assert rec["error"] in ("BrokenPipeError", "ConnectionResetError"), rec["error"]
        delays.append((rec["error_ns"] - t_close) / 1e6)
        after.append(rec["sent"] - sent_at_close)
    measure(http_cancel_ms_p50=percentile(delays, 50), http_cancel_ms_max=max(delays),
            http_cancel_bytes_after_max=max(after))
    assert e.proc.alive()
    assert ok_json(e.http_port, "video.example.test", "/after")["origin"] == "video"


# ---------------------------------------------------------------------------------------------
# 10. PROXY protocol v2 toward the local service


@pytest.mark.parametrize("proxy", [True, False])
def test_proxy_protocol(proxy, edge, origin, services):
    def script(rec):
        s = rec.sock
        buf = bytearray()
        deadline = time.monotonic() + 30
        skip = 28 if proxy else 0
        for _ in range(10_000):
            if len(buf) >= skip and b"\r\n\r\n" in buf[skip:]:
                break
            data = recv_some(s, deadline)
            if not data:
                break
            buf += data
        rec.data = bytes(buf)
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        s.shutdown(socket.SHUT_WR)
        for _ in range(1000):
            if not recv_some(s, deadline):
                break

    svc = services.add(FuncService(script))
    e, _ = serve_http(edge, origin, {"pp.example.test": svc.port}, proxy_protocol=proxy)
    c = connect(e.http_port)
    client_port = c.getsockname()[1]
    # Odd but valid bytes: they must reach the service exactly as sent.
    req = (b"GET /pp?q=1&r=%20 HTTP/1.1\r\nHost: PP.Example.Test:1234\r\n"
           b"x-lower: v\r\nX-Spaces:   a  b   \r\nAccept: */*\r\n\r\n")
    c.sendall(req)
    try:
        (resp,), _, _ = read_responses(c, 1, timeout=30)
    finally:
        c.close()
    assert resp.status == 200 and resp.body == b"ok", resp
    (rec,) = svc.wait_conns(1)
    wait_until(lambda: rec.done_ns is not None or rec.error is not None, 15, "the service")
    assert rec.error is None, rec
    data = rec.data
    if proxy:
        src, sport, dst, dport = parse_proxy_v2(data[:28])
        print(f"PROXY v2: src={src}:{sport} dst={dst}:{dport}")
        assert (src, sport) == (LOCAL, client_port), "the source is the public client"
        assert (dst, dport) == (LOCAL, e.http_port), "the destination is edged's listener"
        data = data[28:]
    else:
        assert not data.startswith(b"\r\n\r\n\x00\r\nQUIT\n"), "a PROXY header without the flag"
    assert data == req, "the request head changed on the way"


# ---------------------------------------------------------------------------------------------
# 11. edged --dev


def test_dev_mode(bindir, procs, services):
    http_port, tunnel_port, dev_port = free_ports(3)
    dev = procs.add(Proc("edged-dev", [bindir / "edged", "--dev", "--dev-port", dev_port,
                                       "--http", f"{LOCAL}:{http_port}",
                                       "--tunnel", f"{LOCAL}:{tunnel_port}"], procs.logdir))
    dev.wait_event("listening")
    line = wait_until(
        lambda: next((x for x in dev.stdout().splitlines() if x.startswith("originctl connect ")),
                     None), 30, "the printed originctl line")
    print(f"edged --dev printed: {line}")
    argv = shlex.split(line)
    assert f"localhost=http://127.0.0.1:{dev_port}" in argv, argv
    assert f"{LOCAL}:{tunnel_port}" in argv, argv
    argv[0] = str(bindir / "originctl")
    page = services.add(HttpOrigin("dev", port=dev_port))
    o = procs.add(Proc("originctl-dev", argv, procs.logdir))
    o.wait_event("ready")
    dev.wait_event("http_route", host="localhost")
    r = curl(["-4", "--write-out", "\n%{http_code}", f"http://localhost:{http_port}/hello"],
             max_time=60)
    assert r.returncode == 0, f"curl exited {r.returncode}: {r.stderr}"
    body, code = r.stdout.rsplit("\n", 1)
    assert code == "200", r.stdout
    got = json.loads(body)
    assert got["origin"] == "dev" and got["path"] == "/hello", got
    assert got["host"] == f"localhost:{http_port}"
    # The dev token also names *.localhost (not routed by the printed line): 404 here.
    resp, s = exchange(http_port, request_bytes("GET", "/", "app.localhost"))
    s.close()
    assert resp.status == 404, resp
    assert [r["path"] for r in page.find()] == ["/hello"]
    assert dev.alive() and o.alive()
