"""The admin API of edged (--admin) and originctl (--admin, `originctl status`), end to end:
real processes, real sockets, /metrics read through a strict Prometheus text parser
(admin_helpers.py), every JSON answer parsed."""
import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from admin_helpers import (
    admin_get, admin_json, metrics, parse_prometheus, raw_exchange, with_admin,
)
from http_helpers import get, start_http_edge, start_http_origin, HttpOrigin
from tunnel import (
    LOCAL, MiB, EchoService, SourceService, abort, connect, free_port, listen_local, measure,
    read_stream, wait_until,
)


def stop_process(pid):
    """SIGSTOP |pid| and wait until every one of its threads is stopped (the signal reaches
    them asynchronously)."""
    os.kill(pid, signal.SIGSTOP)

    def stopped():
        states = []
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/stat") as f:
                    states.append(f.read().rsplit(")", 1)[1].split()[0])
            except FileNotFoundError:
                continue
        return states and all(st in ("T", "t") for st in states)

    wait_until(stopped, 10, f"pid {pid} to stop")


def http_tunnel(edge, origin, services, name="adm", hosts=("adm.example",), extra_origin=()):
    """edged with --http and --admin, and an origin serving `hosts` from an HttpOrigin."""
    web = services.add(HttpOrigin(label=name))
    e, port = with_admin(start_http_edge, edge)
    token = e.token(name, hosts=list(hosts))
    o = start_http_origin(origin, e, token, {h: web.port for h in hosts}, name=name,
                          extra=extra_origin)
    return e, port, o, web


# ---------------------------------------------------------------------------------------------
# 1. edged --admin: healthz, readyz, metrics, tunnels; bad requests


def test_admin_endpoints_and_errors(edge):
    e, port = with_admin(edge, ports=1)
    st, hdrs, body = admin_get(port, "/healthz")
    assert (st, body) == (200, b"ok\n")
    assert hdrs.get("connection") == "close"
    st, _, body = admin_get(port, "/readyz")
    assert (st, body) == (200, b"ready\n")
    assert admin_json(port, "/api/v1/tunnels") == {"tunnels": []}
    m = metrics(port)
    assert m.value("edgetunnel_tunnels_connected") == 0
    assert m.value("edgetunnel_sockets_connected") == 0

    st, _, _ = admin_get(port, "/nope")
    assert st == 404
    st, hdrs, _ = admin_get(port, "/metrics", method="POST", body=b"")
    assert st == 405 and hdrs.get("allow") == "GET"
    st, hdrs, _ = admin_get(port, "/api/v1/push")
    assert st == 405 and hdrs.get("allow") == "POST"
    assert admin_json(port, "/api/tunnel/nosuch/health", status=404) == {"error": "unknown tunnel"}
    assert admin_json(port, "/api/tunnel/bad%20name/health", status=404)["error"]

    # Malformed heads, sizes, slow clients: answered by the server itself, then closed.
    st, _ = raw_exchange(port, b"GARBAGE\r\n\r\n")
    assert st == 400
    st, _ = raw_exchange(port, b"GET /healthz HTTP/1.1\r\n\r\n")  # no Host
    assert st == 400
    st, _ = raw_exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 17000 +
                         b"\r\n\r\n")
    assert st == 431
    st, _ = raw_exchange(port, b"POST /api/v1/push HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Length: 100000\r\n\r\n")
    assert st == 413
    st, _ = raw_exchange(port, b"POST /api/v1/push HTTP/1.1\r\nHost: x\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert st == 411
    t0 = time.monotonic()
    st, _ = raw_exchange(port, b"GET /healthz HTTP/1.1\r\nHost:", timeout=30)
    assert st == 408 and time.monotonic() - t0 >= 4.0
    # Still serving after all that.
    assert admin_get(port, "/healthz")[0] == 200
    assert e.proc.alive()


def test_metrics_and_tunnels_follow_traffic(edge, origin, services):
    e, port, o, web = http_tunnel(edge, origin, services)
    before = metrics(port)
    assert before.value("edgetunnel_tunnels_connected") == 1
    assert before.value("edgetunnel_sessions_connected") == 1
    assert before.value("edgetunnel_sockets_connected") == 5  # control + 4 data

    n = 5
    for i in range(n):
        st, _, body = get(e.http_port, "adm.example", f"/blob/{i}/{256 * 1024}")
        assert st == 200 and len(body) == 256 * 1024
    st, _, _ = get(e.http_port, "unknown.example", "/")
    assert st == 404

    after = wait_until(
        lambda: (lambda m: m if m.value("edgetunnel_streams_closed_total",
                                        outcome="finished") >= before.value(
            "edgetunnel_streams_closed_total", outcome="finished") + n else None)(metrics(port)),
        20, "finished streams in /metrics")
    assert after.value("edgetunnel_streams_opened_total") == \
        before.value("edgetunnel_streams_opened_total") + n
    got = after.value("edgetunnel_bytes_total", direction="from_peer") - \
        before.value("edgetunnel_bytes_total", direction="from_peer")
    assert got >= n * 256 * 1024, got
    assert after.value("edgetunnel_bytes_total", direction="to_peer") > \
        before.value("edgetunnel_bytes_total", direction="to_peer")
    assert after.value("edgetunnel_public_answers_total", code=404) == \
        before.value("edgetunnel_public_answers_total", code=404) + 1
    assert after.value("edgetunnel_streams_open") == 0

    t = admin_json(port, "/api/v1/tunnels")["tunnels"]
    assert len(t) == 1, t
    t = t[0]
    assert t["name"] == "adm" and t["session"] == o.session and t["legacy"] is False
    assert t["routes"] == {"http": ["adm.example"], "tcp": []}
    roles = sorted(s["role"] for s in t["sockets"])
    assert roles == ["control", "data", "data", "data", "data"], t["sockets"]
    assert all(s["state"] == "ready" and s["peer"].startswith(LOCAL) for s in t["sockets"])
    assert t["peer"].startswith(LOCAL + ":")
    assert t["streams"]["total"] == n and t["streams"]["open"] == 0
    assert t["bytes"]["from_origin"] >= n * 256 * 1024
    assert t["bytes"]["to_origin"] > 0


def test_cancel_metrics_by_path_and_histogram(edge, origin, services):
    svc = services.add(SourceService(1 << 40, seed=7))  # endless
    e, port = with_admin(edge, ports=1)
    token = e.token("cancels", tcp=e.ports)
    origin(e, token, {e.ports[0]: svc.port})
    before = metrics(port)
    rounds = 3
    for i in range(rounds):
        c = connect(e.ports[0])
        r = read_stream(c, time.monotonic() + 60, limit=MiB, upto=MiB)
        assert r.error is None and r.count == MiB, r.error
        abort(c)
        rec = svc.wait_conns(i + 1)[i]
        wait_until(lambda: rec.error is not None, 30, "the service to see the reset")
    acks = e.proc.wait_event("cancel_ack", 30, count=rounds)
    m = metrics(port)
    sent = m.value("edgetunnel_cancels_total", direction="sent", path="control") - \
        before.value("edgetunnel_cancels_total", direction="sent", path="control")
    assert sent >= rounds, sent
    assert m.value("edgetunnel_cancels_total", direction="sent", path="data") == 0
    count = m.value("edgetunnel_cancel_delivery_seconds_count")
    assert count - before.value("edgetunnel_cancel_delivery_seconds_count") >= rounds
    assert m.value("edgetunnel_cancel_delivery_seconds_sum") > 0
    d_count = count - before.value("edgetunnel_cancel_delivery_seconds_count")
    d_sum = m.value("edgetunnel_cancel_delivery_seconds_sum") - \
        before.value("edgetunnel_cancel_delivery_seconds_sum")
    # The histogram records the same round trips the cancel_ack log lines show.
    assert d_count == len(acks), (d_count, acks)
    logged = sum(int(a["rtt_ns"]) for a in acks)
    assert abs(d_sum * 1e9 - logged) < 1e3, (d_sum, logged)
    measure(cancel_delivery_mean_us=d_sum / d_count * 1e6, acks=int(d_count))
    assert m.value("edgetunnel_streams_closed_total", outcome="cancelled") >= rounds


def test_parser_rejects_bad_expositions():
    """The parser the tests rely on must fail on what it claims to catch."""
    good = ("# HELP a_total x\n# TYPE a_total counter\na_total{k=\"v\"} 1\n"
            "# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\n"
            "h_sum 0.3\nh_count 2\n")
    parse_prometheus(good)
    bad = [
        good[:-1],  # no final newline
        "a_total 1\n",  # no TYPE
        "# TYPE a counter\na 1\n",  # counter without _total
        "# TYPE a_total counter\na_total{k=v} 1\n",  # unquoted label
        "# TYPE a_total counter\na_total{k=\"v\",} 1\n",  # trailing comma
        "# TYPE a_total counter\na_total{k=\"v\"} 1\na_total{k=\"v\"} 2\n",  # duplicate
        "# TYPE a_total counter\na_total one\n",  # bad value
        good.replace("h_bucket{le=\"+Inf\"} 2", "h_bucket{le=\"+Inf\"} 0"),  # not cumulative
        good.replace("h_count 2", "h_count 3"),  # +Inf != _count
        good.replace("h_bucket{le=\"+Inf\"} 2\n", ""),  # no +Inf
        "# TYPE 1a gauge\n1a 1\n",  # bad name
    ]
    for text in bad:
        try:
            parse_prometheus(text)
        except AssertionError:
            continue
        raise AssertionError(f"accepted {text!r}")


# ---------------------------------------------------------------------------------------------
# 2. Tunnel health: a HEALTH frame makes originctl probe its local services


def test_tunnel_health_probes_the_origin(edge, origin, services):
    dead = free_port()  # nothing listens here: the probe of that route is refused
    web = services.add(HttpOrigin(label="health"))
    e, port = with_admin(start_http_edge, edge)
    token = e.token("hl", hosts=["up.example", "down.example"])
    o = start_http_origin(origin, e, token, {"up.example": web.port}, name="hl",
                          extra=["--http", f"down.example=http://{LOCAL}:{dead}"])
    e.proc.wait_event("http_route", host="down.example")

    j = admin_json(port, "/api/tunnel/hl/health?host=up.example")
    assert j["tunnel"] == "hl" and j["status"] == "ok", j
    assert j["latency_us"] >= 0 and f"{LOCAL}:{web.port} ok" in j["detail"], j

    j = admin_json(port, "/api/tunnel/hl/health?host=down.example", status=503)
    assert j["status"] == "refused" and f"{LOCAL}:{dead} refused" in j["detail"], j

    j = admin_json(port, "/api/tunnel/hl/health", status=503)  # every route: one is down
    assert j["status"] == "refused", j
    assert f"{LOCAL}:{web.port} ok" in j["detail"] and f"{LOCAL}:{dead} refused" in j["detail"]

    j = admin_json(port, "/api/tunnel/hl/health?host=other.example", status=503)
    assert j["status"] == "no_route", j
    assert admin_json(port, "/api/tunnel/hl/health?x=1", status=400)["error"]

    o.proc.wait_event("health_probe", count=4)
    m = metrics(port)
    assert m.value("edgetunnel_health_probes_total", result="ok") == 1
    assert m.value("edgetunnel_health_probes_total", result="refused") == 2
    assert m.value("edgetunnel_health_probes_total", result="no_route") == 1

    # An origin that does not answer (stopped): 503 no_answer, in bounded time.
    stop_process(o.proc.pid)
    try:
        j = admin_json(port, "/api/tunnel/hl/health", status=503, timeout=20)
        assert j["status"] == "no_answer", j
    finally:
        os.kill(o.proc.pid, signal.SIGCONT)
    assert metrics(port).value("edgetunnel_health_probes_total", result="no_answer") == 1

    # Known tunnel, no session: 503 not_connected.
    assert o.proc.stop() == 0
    e.proc.wait_event("session_down", tunnel="hl")
    j = admin_json(port, "/api/tunnel/hl/health", status=503)
    assert j["status"] == "not_connected", j
    assert e.proc.alive()


# ---------------------------------------------------------------------------------------------
# 3. originctl --admin and `originctl status`


def run_status(bindir, port, *args):
    r = subprocess.run([str(bindir / "originctl"), "status", "--admin", f"{LOCAL}:{port}", *args],
                       capture_output=True, timeout=30)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def test_originctl_admin_and_status(bindir, edge, origin, services):
    svc = services.add(EchoService())
    e = edge(ports=1)
    token = e.token("st", tcp=e.ports)
    o, oport = with_admin(origin, e, token, {e.ports[0]: svc.port})

    # Traffic first, so the counters have something to show.
    c = connect(e.ports[0])
    c.sendall(b"x" * 1000)
    got = b""
    for _ in range(1000):
        if len(got) >= 1000:
            break
        chunk = c.recv(4096)
        assert chunk
        got += chunk
    c.close()

    def done():
        j = admin_json(oport, "/status")
        return j if j["streams"]["total"] >= 1 and j["streams"]["open"] == 0 else None

    j = wait_until(done, 20, "the stream to end in /status")
    assert j["session"] == o.session and j["edge"] == e.addr and j["legacy"] is False
    assert j["sockets_ready"] == 5 and j["sockets_wanted"] == 5
    assert sorted(s["role"] for s in j["sockets"]) == ["control"] + ["data"] * 4
    assert all(s["state"] == "ready" and s["rtt_us"] > 0 for s in j["sockets"]), j["sockets"]
    assert j["bytes"]["from_edge"] >= 1000 and j["bytes"]["to_edge"] >= 1000, j["bytes"]
    assert set(j["cancels"]) == {"received", "sent", "acks"}

    m = metrics(oport)
    assert m.value("edgetunnel_sockets_connected") == 5
    assert m.value("edgetunnel_streams_opened_total") >= 1
    assert m.value("edgetunnel_bytes_total", direction="from_peer") >= 1000
    assert admin_get(oport, "/healthz")[0] == 200
    assert admin_get(oport, "/nope")[0] == 404
    assert admin_get(oport, "/status", method="POST", body=b"")[0] == 405

    rc, out, err = run_status(bindir, oport)
    assert rc == 0, err
    assert f"session   {o.session}" in out, out
    assert "sockets   5 of 5 ready" in out, out
    rows = [ln.split() for ln in out.splitlines() if ln.startswith("  ") and "ms" in ln]
    assert len(rows) == 5 and all(r[2] == "ready" for r in rows), out
    assert "streams   0 open" in out and "cancels   received" in out, out

    rc, out, err = run_status(bindir, oport, "--json")
    assert rc == 0, err
    js = json.loads(out)
    assert js["session"] == o.session and len(js["sockets"]) == 5

    # Nobody listening: a clear failure, not a hang.
    rc, out, err = run_status(bindir, free_port())
    assert rc == 1 and "cannot reach" in err, (rc, out, err)


# ---------------------------------------------------------------------------------------------
# 4. POST /api/v1/push


def push(port, obj, status=202):
    body = json.dumps(obj).encode()
    return admin_json(port, "/api/v1/push", status=status, method="POST", body=body,
                      headers={"Content-Type": "application/json"})


def test_push_reaches_only_the_named_origins(edge, origin, services):
    svc = services.add(EchoService())
    e, port = with_admin(edge, ports=2)
    oa = origin(e, e.token("pa", tcp=[e.ports[0]]), {e.ports[0]: svc.port})
    ob = origin(e, e.token("pb", tcp=[e.ports[1]]), {e.ports[1]: svc.port})

    r1 = push(port, {"kind": "notice", "topic": "hello", "body": "only for pa",
                     "tunnels": ["pa", "ghost"]})
    assert r1["sessions"] == 1 and r1["tunnels"] == ["pa"], r1
    assert r1["not_connected"] == ["ghost"] and r1["failed"] == 0, r1
    got = oa.proc.wait_event("push", push_id=r1["push_id"])[0]
    assert got["kind"] == "notice" and got["topic"] == "hello" and got["body"] == "only for pa"

    r2 = push(port, {"kind": "config", "topic": "rate_limit",
                     "body": {"per_minute": 6000, "burst": 100}})
    assert r2["sessions"] == 2 and sorted(r2["tunnels"]) == ["pa", "pb"], r2
    for o in (oa, ob):
        ev = o.proc.wait_event("push", push_id=r2["push_id"])[0]
        assert json.loads(ev["body"]) == {"per_minute": 6000, "burst": 100}, ev
        cfg = o.proc.wait_event("push_config", push_id=r2["push_id"])[0]
        assert cfg["topic"] == "rate_limit" and cfg["applied"] == "0", cfg
    # pb got the second push; the first never reached it (it would have come first).
    assert not ob.proc.events("push", push_id=r1["push_id"])

    for bad in [b"not json", b"[1]", json.dumps({"kind": "shout"}).encode(),
                json.dumps({"kind": "notice", "topic": "t" * 65}).encode(),
                json.dumps({"kind": "notice", "body": "b" * 4001}).encode(),
                json.dumps({"kind": "notice", "tunnels": "pa"}).encode(),
                json.dumps({"kind": "notice", "body": 5}).encode()]:
        st, _, body = admin_get(port, "/api/v1/push", method="POST", body=bad)
        assert st == 400 and json.loads(body)["error"], (bad, st, body)

    m = metrics(port)
    assert m.value("edgetunnel_push_total", result="sent") == 3
    assert m.value("edgetunnel_push_total", result="dropped") == 0
    assert metrics_of_origin_pushes(oa) == 2 and metrics_of_origin_pushes(ob) == 1

    # A drain request drains and stops only the origin it names, as SIGTERM would.
    r3 = push(port, {"kind": "config", "topic": "drain", "body": "{}", "tunnels": ["pb"]})
    cfg = ob.proc.wait_event("push_config", push_id=r3["push_id"], topic="drain")[0]
    assert cfg["applied"] == "1", cfg
    assert ob.proc.wait_exit(20) == 0
    assert ob.proc.events("drained"), ob.proc.tail()
    assert not oa.proc.events("push", push_id=r3["push_id"]) and oa.proc.alive()


def test_rate_limit_push_applies_at_the_edge(edge, origin, services):
    svc = services.add(EchoService())
    e, port = with_admin(edge, ports=2)
    origin(e, e.token("pa", tcp=[e.ports[0]]), {e.ports[0]: svc.port})
    origin(e, e.token("pb", tcp=[e.ports[1]]), {e.ports[1]: svc.port})
    r = push(port, {"kind": "config", "topic": "rate_limit", "tunnels": ["pa"],
                    "body": {"per_minute": 60, "burst": 2}})
    assert r["sessions"] == 1, r
    e.proc.wait_event("rate_limit_set", tunnels=1, per_minute=60, burst=2)

    def echo_ok(p):
        try:
            with socket.create_connection((LOCAL, p), timeout=10) as c:
                c.sendall(b"ping")
                return c.recv(4) == b"ping"
        except OSError:
            return False

    got = [echo_ok(e.ports[0]) for _ in range(4)]
    assert got[:2] == [True, True] and got.count(False) >= 1, got  # one token a second
    assert all(echo_ok(e.ports[1]) for _ in range(4)), "the other tunnel was limited"
    assert metrics(port).value("edgetunnel_rate_limited_total") >= 1
    push(port, {"kind": "config", "topic": "rate_limit", "body": {"per_minute": -1}}, status=400)


def metrics_of_origin_pushes(o):
    return len(o.proc.events("push"))


def test_slow_origin_push_queue_is_bounded(edge, origin, services):
    svc = services.add(EchoService())
    # A long keepalive: the stopped origin must not be declared dead during the test.
    e, port = with_admin(edge, ports=1, extra=["--keepalive", "300s"])
    o = origin(e, e.token("slow", tcp=e.ports), {e.ports[0]: svc.port})
    body = "x" * 4000
    stop_process(o.proc.pid)
    sent = 0
    try:
        deadline = time.monotonic() + 120
        dropped = 0
        for i in range(5000):
            r = push(port, {"kind": "notice", "topic": "flood", "body": body})
            assert r["sessions"] == 1, r
            sent += 1
            if i % 20 == 19:
                dropped = metrics(port).value("edgetunnel_push_total", result="dropped")
                if dropped >= 10:
                    break
            assert time.monotonic() < deadline, f"no drops after {sent} pushes"
        assert dropped >= 10, f"{sent} pushes, {dropped} dropped"
        # The admin call returns once the push is handed to the session's reactor, which then
        # queues or drops it: wait (bounded) until every push is counted one way or the other.
        settle = time.monotonic() + 10
        while True:
            t = admin_json(port, "/api/v1/tunnels")["tunnels"][0]
            if t["push"]["sent"] + t["push"]["dropped"] >= sent or time.monotonic() > settle:
                break
            time.sleep(0.02)
        assert t["push"]["sent"] + t["push"]["dropped"] == sent, (t["push"], sent)
        m = metrics(port)
        assert t["push"]["dropped"] == m.value("edgetunnel_push_total", result="dropped")
        assert t["push"]["sent"] == m.value("edgetunnel_push_total", result="sent")
        # The socket stayed: a full queue drops pushes, it does not close the control socket.
        assert m.value("edgetunnel_sockets_connected") == 5
        assert not e.proc.events("socket_down")
    finally:
        os.kill(o.proc.pid, signal.SIGCONT)
    sent_ok = int(t["push"]["sent"])
    evs = o.proc.wait_event("push", timeout=60, count=sent_ok, topic="flood")
    assert len(evs) == sent_ok
    measure(push_sent=sent, push_delivered=sent_ok, push_dropped=t["push"]["dropped"])


class Blackhole:
    """A listener whose accept queue is full: a connect to it neither succeeds nor fails (the
    SYN is dropped), so a probe of it can only time out."""

    name = "blackhole"

    def __init__(self):
        self.listener = listen_local(0)
        self.port = self.listener.getsockname()[1]
        self.fillers = []
        for _ in range(8):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex((LOCAL, self.port))
            self.fillers.append(c)

    def stop(self):
        for c in self.fillers:
            c.close()
        self.listener.close()
        return True


def test_health_timeout_and_stop_during_a_probe(edge, origin, services):
    hole = services.add(Blackhole())
    e, port = with_admin(edge, ports=1)
    token = e.token("hole", tcp=e.ports)
    o = origin(e, token, {e.ports[0]: hole.port})
    time.sleep(0.3)  # the fillers' handshakes complete, the accept queue is full
    t0 = time.monotonic()
    j = admin_json(port, "/api/tunnel/hole/health", status=503)
    assert j["status"] == "timeout" and f"{LOCAL}:{hole.port} timeout" in j["detail"], j
    assert time.monotonic() - t0 >= 1.5, "answered before the origin's 2 s probe timeout"

    # A stop in the middle of a probe: the probe is freed (the sanitizers check the exit).
    n = len(o.proc.events("health_probe"))
    box = {}
    t = threading.Thread(target=lambda: box.update(r=admin_get(port, "/api/tunnel/hole/health")),
                         daemon=True)
    t.start()
    o.proc.wait_event("health_probe_start", count=2)
    assert len(o.proc.events("health_probe")) == n, "the probe ended before the stop"
    assert o.proc.stop() == 0
    t.join(30)
    assert not t.is_alive() and box["r"][0] == 503, box


def test_health_and_push_in_legacy_mode(edge, origin, services):
    """Without a control socket, HEALTH and PUSH ride a data socket (spec §9.3)."""
    svc = services.add(EchoService())
    e, port = with_admin(edge, ports=1)
    o = origin(e, e.token("leg", tcp=e.ports), {e.ports[0]: svc.port}, no_control=True)
    t = admin_json(port, "/api/v1/tunnels")["tunnels"][0]
    assert t["legacy"] is True and all(s["role"] == "data" for s in t["sockets"]), t
    j = admin_json(port, "/api/tunnel/leg/health")
    assert j["status"] == "ok", j
    r = push(port, {"kind": "notice", "topic": "legacy", "body": "on a data socket"})
    assert r["sessions"] == 1, r
    o.proc.wait_event("push", push_id=r["push_id"], body="on a data socket")


def _proc_net(name):
    with open(f"/proc/sys/net/ipv4/{name}") as f:
        return f.read().split()


def _can_pick(name):
    """Whether this process may run TCP congestion control `name` (the binaries have the
    same rights; as root, asking may load the module)."""
    with socket.socket() as s:
        try:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, name.encode())
        except OSError:
            return False
        return s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0") == \
            name.encode()


def _ss_congestion(port):
    """{(local, peer): congestion control} of every established TCP socket from or to
    127.0.0.1:port, as the kernel reports it (ss -tin: the first word of each info line)."""
    out = subprocess.run(["ss", "-tinH", "state", "established",
                          f"( sport = :{port} or dport = :{port} )"],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    got, addrs = {}, None
    for line in out.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            f = line.split()
            addrs = (f[-2], f[-1])  # with a state filter, ss leaves the state column out
        elif addrs is not None:
            got[addrs] = line.split()[0]
            addrs = None
    return got


@pytest.mark.parametrize("ask", ["default", "cubic", "system", "nosuch"])
def test_tcp_congestion_of_tunnel_sockets(ask, edge, origin, services):
    """--tcp-congestion on both binaries: every tunnel socket runs what was asked (bbr unless
    told: it keeps the queue of a congested link short), as both admin APIs and the kernel
    itself (ss) report; an algorithm this kernel does not have (or does not let us pick)
    leaves the host's default with a warning naming it, and the tunnel still works."""
    host = _proc_net("tcp_congestion_control")[0]
    want = {"default": "bbr", "cubic": "cubic", "system": None, "nosuch": "nosuch"}[ask]
    ok = want is None or _can_pick(want)
    expect = want if want is not None and ok else host
    extra = [] if ask == "default" else ["--tcp-congestion", ask]
    svc = services.add(SourceService(8 * MiB, seed=71))
    e, e_admin = with_admin(edge, extra=extra)
    token = e.token("cc", tcp=e.ports)
    o, o_admin = with_admin(origin, e, token, {e.ports[0]: svc.port}, extra=extra)

    t = admin_json(e_admin, "/api/v1/tunnels")["tunnels"][0]
    j = admin_json(o_admin, "/status")
    assert len(t["sockets"]) == len(j["sockets"]) == 5
    assert {s["congestion"] for s in t["sockets"] + j["sockets"]} == {expect}, (t, j)
    kernel = _ss_congestion(e.tunnel_port)
    assert len(kernel) == 10, kernel  # five connections, both ends
    assert set(kernel.values()) == {expect}, kernel
    for p in (e.proc, o.proc):
        # said once at WARN, then at DEBUG (not logged at the default level)
        warned = p.events("sockopt_failed", opt="TCP_CONGESTION")
        assert len(warned) == (0 if ok else 1), warned
    measure(ask=ask, host=host, runs=expect)

    c = connect(e.ports[0])
    r = read_stream(c, time.monotonic() + 60, limit=8 * MiB)
    c.close()
    assert r.error is None and r.eof and r.count == 8 * MiB, (r.error, r.count)
