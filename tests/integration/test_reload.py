"""SIGHUP reloads edged's certificate, token key and settings (the --config file and flags)
without dropping a session or a stream (issue #6). New handshakes see the new certificate and
key; streams in flight carry on.
"""
import os
import shutil
import signal
import threading
import time

from http_helpers import HttpOrigin, get, start_http_edge, start_http_origin
from tunnel import MiB, Pki, SourceService, connect, make_token_key, mint_token, read_stream, \
    pattern_digest, wait_until


def test_sighup_new_cert_and_token_key_keeps_sessions(bindir, pki, procs, services, edge,
                                                      origin, tmp_path):
    # The edge reads copies, so the test can replace them under it.
    cert, key, tkey = tmp_path / "edge.pem", tmp_path / "edge.key", tmp_path / "token.key"
    shutil.copy(pki.cert, cert)
    shutil.copy(pki.key, key)
    make_token_key(tkey)
    size = 96 * MiB
    src = services.add(SourceService(size, seed=44))
    e = edge(extra=("--cert", cert, "--key", key, "--token-key", tkey))
    port = e.ports[0]
    old_token = mint_token(tkey, "rl", tcp=[port])
    o1 = origin(e, old_token, {port: src.port})

    result = {}
    go = threading.Event()

    def reader():
        with connect(port) as c:
            r = read_stream(c, time.monotonic() + 200, limit=size, upto=8 * MiB)
            go.wait(60)
            result["r"] = read_stream(c, time.monotonic() + 200, limit=size, into=r)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    wait_until(lambda: src.accepted >= 1 and src.conns[0].sent >= 8 * MiB, 60, "the download")

    # New certificate and token key, then SIGHUP.
    new = Pki(tmp_path / "new")
    shutil.copy(new.cert, cert)
    shutil.copy(new.key, key)
    make_token_key(tkey)
    os.kill(e.proc.pid, signal.SIGHUP)
    e.proc.wait_event("reloaded", 10)
    go.set()
    t.join(220)
    r = result["r"]
    assert r.error is None and r.eof and r.count == size and r.digest == pattern_digest(44, size)
    assert o1.proc.alive() and not e.proc.events("session_down"), "the reload dropped a session"

    # A new origin with the old token is refused; with a token of the new key it connects,
    # and it sees the new certificate (the old pin fails TLS).
    o2 = origin(e, old_token, {port: src.port}, ready=False, extra=("--pin", new.pin))
    o2.proc.wait_event("refused", 20, reason="auth_signature")
    o2.proc.stop()
    new_token = mint_token(tkey, "rl", tcp=[port])
    o3 = origin(e, new_token, {port: src.port}, ready=False)  # the old pin
    o3.proc.wait_for(r"tls|verify|pin", 20)
    assert not o3.proc.events("ready")
    o3.proc.stop()
    o4 = origin(e, new_token, {port: src.port}, ready=False,
                extra=("--pin", new.pin))
    o4.proc.wait_event("ready", 20)


def test_sighup_rereads_the_config_file(edge, origin, services, tmp_path):
    web = services.add(HttpOrigin("web"))
    conf = tmp_path / "edged.conf"
    conf.write_text("rate-limit = 0\n")
    e = start_http_edge(edge, extra=("--config", conf))
    start_http_origin(origin, e, e.token("web", hosts=["web.example.test"]),
                      {"web.example.test": web.port}, name="web")
    assert [get(e.http_port, "web.example.test", f"/a{i}")[0] for i in range(6)] == [200] * 6
    conf.write_text("rate-limit = 60\nrate-burst = 2\n")
    os.kill(e.proc.pid, signal.SIGHUP)
    e.proc.wait_event("reloaded", 10, rate_limit=60, rate_burst=2)
    statuses = [get(e.http_port, "web.example.test", f"/b{i}")[0] for i in range(6)]
    assert statuses[:2] == [200, 200] and statuses.count(429) >= 3, statuses
    # A bad file is refused whole: the settings in force stay.
    conf.write_text("rate-limit = lots\n")
    os.kill(e.proc.pid, signal.SIGHUP)
    e.proc.wait_event("reload_failed", 10)
    assert e.proc.alive()


def test_sighup_originctl_starts_a_new_session_and_keeps_streams(edge, origin, services,
                                                                tmp_path):
    web = services.add(HttpOrigin("web"))
    e = start_http_edge(edge, origin_timeout="20s")
    token = e.token("web", hosts=["a.example.test", "b.example.test"])
    conf = tmp_path / "originctl.conf"
    conf.write_text(f"http = a.example.test=http://127.0.0.1:{web.port}\ndata-conns = 4\n")
    o = origin(e, token, {}, extra=("--config", conf))
    e.proc.wait_event("http_route", host="a.example.test")
    old = o.session
    slow = {}

    def download():
        slow["r"] = get(e.http_port, "a.example.test", "/late/0ms/60x50ms", timeout=60)

    t = threading.Thread(target=download, daemon=True)
    t.start()
    wait_until(lambda: web.find(prefix="/late/"), 20, "the slow download to start")
    assert get(e.http_port, "b.example.test", "/before", timeout=20)[0] == 404

    # A new route and a smaller pool: a new session, the old one's stream finishes.
    conf.write_text(f"http = a.example.test=http://127.0.0.1:{web.port}\n"
                    f"http = b.example.test=http://127.0.0.1:{web.port}\ndata-conns = 2\n")
    os.kill(o.proc.pid, signal.SIGHUP)
    o.proc.wait_event("reloaded", 10, generation=2, data=2)
    new = o.proc.wait_event("ready", 20, generation=2, data=2)[0]["session"]
    assert new != old
    assert get(e.http_port, "b.example.test", "/after", timeout=20)[0] == 200
    t.join(60)
    status, _, body = slow["r"]
    assert status == 200 and len(body) == 60 * 1024, (status, len(body))
    # The old session goes once it carries nothing (GOAWAY, then closed when idle).
    e.proc.wait_event("session_down", 20, session=old)
    assert o.proc.alive() and not e.proc.events("session_down", session=new)
    assert [get(e.http_port, "a.example.test", f"/n{i}")[0] for i in range(4)] == [200] * 4
    # A bad file leaves the running session alone.
    conf.write_text("data-conns = lots\n")
    os.kill(o.proc.pid, signal.SIGHUP)
    o.proc.wait_event("reload_failed", 10)
    assert get(e.http_port, "b.example.test", "/still", timeout=20)[0] == 200
