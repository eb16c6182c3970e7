"""Limits at the edge (PRODUCT.md's table of faults; issue #6): each has a flag, answers as the
product says (429 / 503 / RST, or a refused handshake), is counted, and harms no one else.

    --rate-limit / --rate-burst   new public connections per tunnel (token bucket) -> 429
    --max-client-conns            open public connections per client address -> 429
    --max-streams                 open streams per session -> 503
    --max-tunnels                 sessions -> handshake refused (limit_sessions)
    --idle-timeout                a stream that moves nothing is ended
    5,000 slowloris connections   held by the reactor, answered 408, a normal client served

Clients from another loopback address (127.0.0.2) stand for other users.
"""
import selectors
import socket
import threading
import time

from http_helpers import (
    HttpOrigin, get, read_responses, request_bytes, start_http_edge, start_http_origin,
)
from tunnel import KiB, LOCAL, FuncService, connect, wait_until

OTHER = "127.0.0.2"  # another client address on the loopback


def get_from(src, port, host, path, timeout=20):
    """One request on a fresh connection from source address `src`: the Response."""
    s = socket.create_connection((LOCAL, port), timeout=timeout, source_address=(src, 0))
    try:
        s.sendall(request_bytes("GET", path, host))
        (resp,), _, _ = read_responses(s, 1, timeout)
        return resp
    finally:
        s.close()


def edge_stats(e):
    e.proc.stop()
    return e.proc.stats()


def test_rate_limit_per_tunnel_answers_429_and_spares_other_tunnels(edge, origin, services):
    web = services.add(HttpOrigin("web"))
    other = services.add(HttpOrigin("other"))
    e = start_http_edge(edge, extra=("--rate-limit", "60", "--rate-burst", "5"))
    start_http_origin(origin, e, e.token("limited", hosts=["a.example.test"]),
                      {"a.example.test": web.port}, name="limited")
    start_http_origin(origin, e, e.token("free", hosts=["b.example.test"]),
                      {"b.example.test": other.port}, name="free")
    statuses = [get(e.http_port, "a.example.test", f"/r{i}")[0] for i in range(12)]
    ok, limited = statuses.count(200), statuses.count(429)
    # A burst of 5, then one more per second at 60/min: the 12 requests take well under 2 s.
    assert 5 <= ok <= 7 and ok + limited == 12, statuses
    assert statuses[:5] == [200] * 5, statuses
    resp = get_from(LOCAL, e.http_port, "a.example.test", "/again")
    assert resp.status == 429 and "close" in resp.tokens("connection"), resp
    # The other tunnel has its own bucket (and a burst of its own).
    assert [get(e.http_port, "b.example.test", f"/o{i}")[0] for i in range(5)] == [200] * 5
    time.sleep(1.2)  # one token back
    assert get(e.http_port, "a.example.test", "/later")[0] == 200
    st = edge_stats(e)
    assert int(st["rate_limited"]) == limited + 1, st


def test_client_conn_limit_per_address(edge, origin, services):
    web = services.add(HttpOrigin("web"))
    e = start_http_edge(edge, head_timeout="20s", extra=("--max-client-conns", "20"))
    start_http_origin(origin, e, e.token("web", hosts=["web.example.test"]),
                      {"web.example.test": web.port}, name="web")
    held = []
    try:
        # 20 connections from 127.0.0.1 with half a head each: the address's whole allowance.
        for _ in range(20):
            s = socket.create_connection((LOCAL, e.http_port), timeout=20)
            s.sendall(b"GET / HTTP/1.1\r\nHost: web.example.test\r\n")
            held.append(s)
        time.sleep(1.0)  # the edge accepts them (no event says so; ASan makes it slower)
        # The 21st from the same address: 429 at once.
        resp = get_from(LOCAL, e.http_port, "web.example.test", "/over")
        assert resp.status == 429, resp
        # Another address is not affected.
        assert get_from(OTHER, e.http_port, "web.example.test", "/other").status == 200
        # Finishing the held requests gives the allowance back.
        for s in held:
            s.sendall(b"\r\n")
            (resp,), _, _ = read_responses(s, 1, 20)
            assert resp.status == 200, resp
    finally:
        for s in held:
            s.close()
    time.sleep(0.3)
    statuses = [get_from(LOCAL, e.http_port, "web.example.test", f"/n{i}").status
                for i in range(25)]
    assert statuses == [200] * 25, statuses
    st = edge_stats(e)
    assert int(st["limit_client_conns"]) == 1, st


def test_max_streams_per_session(edge, origin, services):
    web = services.add(HttpOrigin("web"))
    e = start_http_edge(edge, origin_timeout="20s", extra=("--max-streams", "3"))
    start_http_origin(origin, e, e.token("web", hosts=["web.example.test"]),
                      {"web.example.test": web.port}, name="web")
    slow = []
    try:
        for i in range(3):  # 3 open streams: 2 s of body each
            s = socket.create_connection((LOCAL, e.http_port), timeout=20)
            s.sendall(request_bytes("GET", "/late/0ms/40x50ms", "web.example.test"))
            slow.append(s)
        wait_until(lambda: len(web.find(prefix="/late/")) == 3, 20, "3 slow requests")
        resp = get_from(OTHER, e.http_port, "web.example.test", "/fourth")
        assert resp.status == 503, resp
        for s in slow:
            (resp,), _, _ = read_responses(s, 1, 30)
            assert resp.status == 200 and len(resp.body) == 40 * KiB, resp
    finally:
        for s in slow:
            s.close()
    # Streams end a little after their responses: poll (bounded) until one is admitted again.
    wait_until(lambda: get(e.http_port, "web.example.test", "/after")[0] == 200, 10,
               "a stream admitted once the others ended")
    st = edge_stats(e)
    assert int(st["limit_streams"]) >= 1, st


def test_max_tunnels_refuses_the_next_session(edge, origin, services):
    e = edge(ports=2, extra=("--max-tunnels", "1"))
    svc = services.add(FuncService(lambda rec: rec.sock.sendall(b"hi")))
    port_a, port_b = e.ports
    origin(e, e.token("one", tcp=[port_a]), {port_a: svc.port})
    o2 = origin(e, e.token("two", tcp=[port_b]), {port_b: svc.port}, ready=False)
    o2.proc.wait_event("refused", 20, reason="limit_sessions")
    assert o2.proc.alive(), "a limit is not permanent: the origin redials"
    assert e.refusals(reason="limit_sessions")
    # The first tunnel still serves.
    c = connect(port_a, timeout=10)
    assert c.recv(2) == b"hi"
    c.close()
    st = edge_stats(e)
    assert int(st["limit_tunnels"]) >= 1, st


def test_idle_timeout_ends_quiet_streams_only(edge, origin, services):
    def hold(rec):  # answers every byte it gets, until the client goes
        for _ in range(10_000):
            b = rec.sock.recv(64)
            if not b:
                return
            rec.sock.sendall(b)

    svc = services.add(FuncService(hold))
    e = edge(extra=("--idle-timeout", "2s"))
    port = e.ports[0]
    origin(e, e.token("t", tcp=[port]), {port: svc.port})
    quiet = connect(port, timeout=20)
    busy = connect(port, timeout=20)
    t0 = time.monotonic()
    for _ in range(20):  # 4 s of a byte every 0.2 s on `busy`
        busy.sendall(b"x")
        assert busy.recv(1) == b"x"
        time.sleep(0.2)
    # `quiet` moved nothing: ended by the edge (reset or EOF), after at least the timeout.
    quiet.settimeout(10)
    try:
        ended = quiet.recv(1) == b""
    except OSError:
        ended = True
    assert ended, "the quiet stream is still open"
    assert time.monotonic() - t0 >= 2.0
    busy.sendall(b"y")
    assert busy.recv(1) == b"y", "the busy stream was ended"
    quiet.close()
    busy.close()
    st = edge_stats(e)
    assert int(st["idle_closed"]) == 1, st


def test_5000_slowloris_connections_and_a_normal_client(edge, origin, services):
    web = services.add(HttpOrigin("web"))
    e = start_http_edge(edge, head_timeout="8s", extra=("--max-client-conns", "0"))
    start_http_origin(origin, e, e.token("web", hosts=["web.example.test"]),
                      {"web.example.test": web.port}, name="web")
    n = 5000
    sel = selectors.DefaultSelector()
    socks = []
    try:
        t0 = time.monotonic()
        for i in range(n):
            s = socket.create_connection((LOCAL, e.http_port), timeout=20)
            s.sendall(b"GET / HTTP/1.1\r\nHost: web.example.test\r\nX-Slow: ")
            socks.append(s)
        opened_s = time.monotonic() - t0
        # All 5000 are held by the edge; another client is served meanwhile.
        for i in range(5):
            resp = get_from(OTHER, e.http_port, "web.example.test", f"/normal{i}")
            assert resp.status == 200, resp
        # Every slow connection gets its 408 at the head timeout (nothing else, no reset).
        for s in socks:
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ)
        got = {}
        deadline = time.monotonic() + 60
        for _ in range(100_000):
            if len(got) == n or time.monotonic() > deadline:
                break
            for key, _ in sel.select(timeout=1.0):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except OSError as exc:
                    data = repr(exc).encode()
                got[s.fileno()] = got.get(s.fileno(), b"") + data
                if not data or b"\r\n\r\n" in got[s.fileno()]:
                    sel.unregister(s)
        answers = [v[:12] for v in got.values()]
        assert len(got) == n, f"only {len(got)} of {n} answered"
        assert all(a == b"HTTP/1.1 408" for a in answers), set(answers)
    finally:
        sel.close()
        for s in socks:
            s.close()
    print(f"{n} slow connections opened in {opened_s:.1f} s")
    st = edge_stats(e)
    assert int(st["public_refused"]) >= n, st
