"""Drain and restarts: SIGTERM to either side lets in-flight streams finish while new ones go
elsewhere (GOAWAY, spec §5.12); a rolling restart of edged under wrk load fails no request; a
request whose tunnel is reconnecting waits for it (--route-wait) instead of failing.

Real processes only: edged, originctl, curl, wrk and python's http.server; the rolling restart
runs in a network namespace the test creates and removes itself (its loopback only), where
net.ipv4.tcp_migrate_req=1 moves connections queued on the old instance's listeners to the new
one, as README.md tells operators to set.
"""
import hashlib
import os
import pathlib
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from http_helpers import (
    HttpOrigin, get, run_threads, start_http_edge, start_http_origin,
)
from tunnel import (
    KiB, LOCAL, MiB, Proc, START_TIMEOUT, free_port, mint_token, wait_until,
)

HOST = "web.example.test"


def _slow_path(kib, gap_ms):
    """HttpOrigin's /late route: `kib` KiB, one every `gap_ms` ms (Content-Length)."""
    return f"/late/0ms/{kib}x{gap_ms}ms"


# ---------------------------------------------------------------------------------------------
# originctl SIGTERM: in-flight streams finish, new ones go to the other replica


def test_origin_drain_finishes_inflight_and_replica_serves_new(edge, origin, services):
    web = services.add(HttpOrigin("web"))
    e = start_http_edge(edge, origin_timeout="20s")
    token = e.token("web", hosts=[HOST])
    o1 = start_http_origin(origin, e, token, {HOST: web.port}, name="web",
                           extra=("--drain-timeout", "30s"))
    o2 = start_http_origin(origin, e, token, {HOST: web.port}, name="web")

    # Slow downloads spread round-robin over both replicas' sessions: 48 KiB over ~2.4 s each.
    n_slow = 6
    slow = {}

    def download(i):
        status, _, body = get(e.http_port, HOST, _slow_path(48, 50), timeout=60)
        slow[i] = (status, len(body))

    th = threading.Thread(target=run_threads, args=(n_slow, download, 60), daemon=True)
    th.start()
    wait_until(lambda: len(web.find(prefix="/late/")) >= n_slow, 20, "slow downloads started")

    os.kill(o1.proc.pid, signal.SIGTERM)
    o1.proc.wait_event("draining", 10)
    # The edge hears GOAWAY on every socket of o1's session and opens nothing more there.
    e.proc.wait_event("goaway", 10, count=5)
    quick = [get(e.http_port, HOST, f"/q{i}", timeout=20)[0] for i in range(20)]
    assert quick == [200] * 20, quick

    th.join(60)
    assert not th.is_alive(), "slow downloads still running"
    assert sorted(slow) == list(range(n_slow)), slow
    assert all(v == (200, 48 * KiB) for v in slow.values()), slow
    assert o1.proc.wait_exit(30) == 0
    drained = o1.proc.events("drained")
    assert drained and drained[-1]["left"] == "0", o1.proc.tail()
    st = o1.proc.stats()
    carried = int(st["streams_finished"])
    assert carried >= 1, "the drained replica carried none of the slow downloads"
    # No quick request went to the draining replica: it only finished what it had.
    assert int(st["streams_opened"]) == carried <= n_slow, st
    assert o2.proc.alive()


# ---------------------------------------------------------------------------------------------
# edged SIGTERM: what is still running at the drain timeout is cut, and the edge exits


def test_edge_drain_timeout_ends_endless_stream(edge, origin, services):
    web = services.add(HttpOrigin("web"))
    e = start_http_edge(edge, origin_timeout="20s", extra=("--drain-timeout", "1s"))
    token = e.token("web", hosts=[HOST])
    start_http_origin(origin, e, token, {HOST: web.port}, name="web")
    s = socket.create_connection((LOCAL, e.http_port), timeout=20)
    s.sendall(f"GET /endless HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    got = 0
    for _ in range(1000):
        got += len(s.recv(64 * KiB))
        if got > 256 * KiB:
            break
    assert got > 256 * KiB
    t0 = time.monotonic()
    os.kill(e.proc.pid, signal.SIGTERM)
    assert e.proc.wait_exit(15) == 0
    elapsed = time.monotonic() - t0
    drained = e.proc.events("drained")
    assert drained and int(drained[-1]["left"]) >= 1, e.proc.tail()
    assert e.proc.events("draining"), e.proc.tail()
    # The client's connection ends (reset or EOF) instead of hanging.
    s.settimeout(10)
    ended = False
    for _ in range(100_000):
        try:
            if not s.recv(64 * KiB):
                ended = True
                break
        except OSError:
            ended = True
            break
    assert ended, "the client's stream did not end with the edge"
    s.close()
    print(f"edge exited {elapsed:.2f} s after SIGTERM with --drain-timeout 1s")


# ---------------------------------------------------------------------------------------------
# kill -9 originctl mid-download, restart it: the download fails fast, the service comes back,
# and a request made while no origin is connected waits for the new one (--route-wait)


def test_origin_kill9_restart_service_back(edge, origin, services):
    web = services.add(HttpOrigin("web"))
    e = start_http_edge(edge, origin_timeout="20s", route_wait="15s")
    token = e.token("web", hosts=[HOST])
    o1 = start_http_origin(origin, e, token, {HOST: web.port}, name="web")

    s = socket.create_connection((LOCAL, e.http_port), timeout=20)
    s.sendall(f"GET /late/0ms/2000x2ms HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    got = s.recv(64 * KiB)
    assert got.startswith(b"HTTP/1.1 200"), got[:100]
    os.kill(o1.proc.pid, signal.SIGKILL)
    o1.proc.wait_exit(10)
    # The download ends (reset or short EOF) soon, not after the origin's 4 s of body.
    s.settimeout(10)
    total = len(got)
    for _ in range(100_000):
        try:
            data = s.recv(64 * KiB)
        except OSError:
            break
        if not data:
            break
        total += len(data)
    assert total < 2000 * KiB, "the download completed although its origin was killed"
    s.close()
    e.proc.wait_event("session_down", 20, tunnel="web")

    # No origin now: a request waits (route wait) and is served by the new originctl.
    result = {}

    def waiter():
        result["r"] = get(e.http_port, HOST, "/after-restart", timeout=30)

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    time.sleep(0.5)
    assert t.is_alive(), f"answered without an origin: {result}"
    start_http_origin(origin, e, token, {HOST: web.port}, name="web")
    t.join(30)
    assert not t.is_alive()
    status, _, body = result["r"]
    assert status == 200, (status, body[:200])


# ---------------------------------------------------------------------------------------------
# Rolling restart of edged under wrk load: zero failed requests


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30,
                          check=check)


@pytest.fixture
def netns():
    """A network namespace with only its loopback up and tcp_migrate_req=1; removed after."""
    name = f"etdrain{os.getpid()}"
    _ip("netns", "del", name, check=False)
    _ip("netns", "add", name)
    try:
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        _ip("netns", "exec", name, "sysctl", "-q", "-w", "net.ipv4.tcp_migrate_req=1")
        yield name
    finally:
        _ip("netns", "del", name, check=False)


def _in(ns, *argv):
    return ["ip", "netns", "exec", ns, *[str(a) for a in argv]]


def test_edge_rolling_restart_under_wrk_fails_nothing(bindir, pki, token_key, procs, netns,
                                                      tmp_path):
    www = tmp_path / "www"
    www.mkdir()
    (www / "small.txt").write_bytes(b"x" * 200)
    big = os.urandom(6 * MiB)
    (www / "big.bin").write_bytes(big)
    origin_port, tunnel_port, http_port = 18081, 17443, 18080  # inside the namespace

    web = procs.add(Proc("http.server", _in(
        netns, "/usr/bin/python3", "-m", "http.server", "--bind", LOCAL,
        "--directory", www, origin_port), procs.logdir))

    def start_edge():
        p = procs.add(Proc("edged", _in(
            netns, bindir / "edged", "--tunnel", f"{LOCAL}:{tunnel_port}",
            "--http", f"{LOCAL}:{http_port}", "--cert", pki.cert, "--key", pki.key,
            "--token-key", token_key, "--threads", 2, "--drain-timeout", "20s",
            "--route-wait", "5s"), procs.logdir))
        p.wait_event("listening")
        return p

    a = start_edge()
    token = mint_token(token_key, "rr", hosts=[HOST])
    o = procs.add(Proc("originctl", _in(
        netns, bindir / "originctl", "connect", "--edge", f"{LOCAL}:{tunnel_port}",
        "--token", token, "--pin", pki.pin, "--threads", 2, "--drain-timeout", "5s",
        "--http", f"{HOST}=http://{LOCAL}:{origin_port}"), procs.logdir))
    o.wait_event("ready")
    a.wait_event("http_route", host=HOST)
    wait_until(lambda: subprocess.run(
        _in(netns, "curl", "-sf", "-o", "/dev/null", "-H", f"Host: {HOST}",
            f"http://{LOCAL}:{http_port}/small.txt"), timeout=20).returncode == 0,
        20, "a first request through edge A")

    # A long download through A that spans the restart (6 MiB at 1.5 MiB/s: ~4 s).
    out = tmp_path / "big.out"
    dl = subprocess.Popen(_in(netns, "curl", "-sS", "--fail", "--limit-rate", "1536k",
                              "-o", out, "-H", f"Host: {HOST}",
                              f"http://{LOCAL}:{http_port}/big.bin"),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wrk = subprocess.Popen(_in(netns, "wrk", "-t2", "-c16", "-d8s", "--timeout", "5s",
                               "-H", f"Host: {HOST}", "-H", "Connection: close",
                               f"http://{LOCAL}:{http_port}/small.txt"),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        b = start_edge()  # the same ports (SO_REUSEPORT): it shares the load with A now
        time.sleep(0.5)
        os.kill(a.pid, signal.SIGTERM)
        a.wait_event("draining", 10)
        o.wait_event("session_renew", 10)
        o.wait_event("ready", 20, generation=2)
        b.wait_event("http_route", 10, host=HOST)
        wrk_out, wrk_err = wrk.communicate(timeout=40)
        dl_out, dl_err = dl.communicate(timeout=40)
    finally:
        for p in (wrk, dl):
            if p.poll() is None:
                p.kill()
                p.wait(10)
    print(wrk_out)
    assert wrk.returncode == 0, wrk_err
    m = re.search(r"(\d+) requests in", wrk_out)
    assert m and int(m.group(1)) >= 100, wrk_out
    assert "Socket errors" not in wrk_out, wrk_out
    assert "Non-2xx" not in wrk_out, wrk_out
    assert dl.returncode == 0, dl_err
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(big).digest(), \
        "the download that spanned the restart arrived changed"
    assert a.wait_exit(30) == 0
    drained = a.events("drained")
    assert drained and drained[-1]["left"] == "0", a.tail()
    # B served requests once A was gone.
    done = subprocess.run(_in(netns, "curl", "-sf", "-o", "/dev/null", "-w", "%{http_code}",
                              "-H", f"Host: {HOST}", f"http://{LOCAL}:{http_port}/small.txt"),
                          capture_output=True, text=True, timeout=20)
    assert done.stdout == "200", (done.stdout, done.stderr)
    assert web.alive()
