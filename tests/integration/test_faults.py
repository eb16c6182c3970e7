"""Faults under load (issue #6): a data socket lost mid-transfer fails only its own streams and
is redialled; a lost control socket falls back to data-socket cancels until it is back; a
hostile client that completes a valid handshake and then sends garbage, truncated, oversized
and out-of-order frames is closed (or has its stream refused) with the right code while the
other tunnels carry on; a flood of forged tokens is refused and counted.

Sockets are killed from outside with `ss -K` (SOCK_DESTROY, as root), the way a middlebox or a
crashed NAT would end them: both ends see an abort.
"""
import errno
import os
import random
import select
import socket
import ssl
import struct
import subprocess
import threading
import time

from tunnel import (
    KiB, LOCAL, MiB, EchoService, FuncService, SourceService, abort, as_int, b64url, connect,
    echo_roundtrip, mint_token, pattern_digest, read_stream, wait_until,
)

HDR = struct.Struct(">IIIBBH")  # payload_length, user_channel, stream_id, action, flags, reserved
A_HELLO, A_WELCOME, A_OPEN, A_DATA, A_END, A_WINDOW = 0x01, 0x02, 0x10, 0x11, 0x12, 0x13
A_CANCEL, A_PING, A_PONG, A_ERROR = 0x20, 0x30, 0x31, 0x3F
ROLE_CONTROL, ROLE_DATA = 1, 2


def serve(edge, origin, services_list, name, **origin_kw):
    e = edge(ports=len(services_list))
    o = origin(e, e.token(name, tcp=e.ports), {p: s.port for p, s in zip(e.ports, services_list)},
               **origin_kw)
    return e, o


def kill_socket(tunnel_port, peer):
    """Destroy the edge's TCP socket to origin address `peer` ("127.0.0.1:PORT") (ss -K)."""
    pport = peer.rsplit(":", 1)[1]
    r = subprocess.run(["ss", "-K", "-t", "src", f"{LOCAL}:{tunnel_port}", "dst",
                        f"{LOCAL}:{pport}"], capture_output=True, text=True, timeout=10)
    assert f":{pport}" in r.stdout, f"ss -K found no socket to {peer}: {r.stdout} {r.stderr}"


def socket_ups(e, session, role):
    return [ev for ev in e.proc.events("socket_up", session=session) if ev.get("role") == role]


# ---------------------------------------------------------------------------------------------
# A lost data socket


def test_lost_data_socket_fails_only_its_streams(edge, origin, services):
    n, size = 8, 64 * MiB
    src = services.add(SourceService(size, seed=31))
    e, o = serve(edge, origin, [src], "lose")
    port = e.ports[0]
    data_socks = socket_ups(e, o.session, "data")
    assert len(data_socks) == 4

    # 8 downloads: two per data socket (round-robin). Each reads 1 MiB, then waits for the
    # kill, then reads on to the end.
    go = threading.Event()
    results = [None] * n

    def reader(i):
        try:
            with connect(port) as c:
                r = read_stream(c, time.monotonic() + 200, limit=size, upto=MiB)
                go.wait(60)
                if r.error is None and not r.eof:
                    read_stream(c, time.monotonic() + 200, limit=size, into=r)
                results[i] = r
        except BaseException as exc:  # reported below
            results[i] = exc

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    wait_until(lambda: src.accepted >= n, 60, f"{n} streams")
    recs = src.wait_conns(n)
    wait_until(lambda: all(r.sent >= MiB for r in recs), 60, "every stream to flow")
    victim = data_socks[1]
    kill_socket(e.tunnel_port, victim["peer"])
    e.proc.wait_event("socket_down", 20, socket=victim["socket"])
    go.set()
    for t in threads:
        t.join(220)
    assert not any(t.is_alive() for t in threads), "downloads still running"
    assert not any(isinstance(r, BaseException) for r in results), results
    whole = [r for r in results if r.error is None and r.eof and r.count == size]
    broken = [r for r in results if r not in whole]
    # The lost socket carried 2 of the 8 (round-robin); they fail with a reset, never a FIN
    # that would pass a cut stream for a complete one. The other 6 arrive intact.
    assert len(broken) == 2, [(r.error, r.eof, r.count) for r in results]
    assert all(r.error == "ECONNRESET" for r in broken), [(r.error, r.eof) for r in broken]
    assert all(r.digest == pattern_digest(31, size) for r in whole)
    # The origin redials the lost socket; new streams work through all four again.
    wait_until(lambda: len(socket_ups(e, o.session, "data")) >= 5, 30, "the redialled socket")
    for _ in range(8):
        with connect(port) as c:
            r = read_stream(c, time.monotonic() + 120, limit=size)
        assert r.error is None and r.count == size, (r.error, r.count)


# ---------------------------------------------------------------------------------------------
# A lost control socket: cancels ride the data sockets until it is back


def test_lost_control_socket_falls_back_to_data_cancels(edge, origin, services):
    gone = []

    def hold(rec):  # sends until the client's cancel resets it
        s = rec.sock
        try:
            for _ in range(100_000):
                s.sendall(b"z" * (64 * KiB))
        except OSError as exc:
            gone.append(type(exc).__name__)

    svc = services.add(FuncService(hold))
    e, o = serve(edge, origin, [svc], "ctl")
    port = e.ports[0]
    (ctrl,) = socket_ups(e, o.session, "control")
    kill_socket(e.tunnel_port, ctrl["peer"])
    e.proc.wait_event("socket_down", 20, socket=ctrl["socket"])

    def cancel_one():
        c = connect(port)
        assert len(c.recv(64 * KiB)) > 0
        abort(c)  # RST: the client went away
        wait_until(lambda: len(gone) >= n_before + 1, 10, "the origin's reset")

    # No control socket now (the origin redials it after its backoff): the cancel goes on the
    # stream's data socket, ahead of its data.
    n_before = len(gone)
    cancel_one()
    e.proc.wait_event("socket_up", 30, session=o.session, role="control", count=2)  # back
    n_before = len(gone)
    cancel_one()
    assert o.proc.stop(grace=10) == 0
    assert e.proc.stop(grace=10) == 0
    st = e.proc.stats()
    assert as_int(st, "cancels_sent_data") == 1, st
    assert as_int(st, "cancels_sent_control") == 1, st


# ---------------------------------------------------------------------------------------------
# A hostile client with a valid token


def _tls(port):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["edgetunnel/1"])
    raw = socket.create_connection((LOCAL, port), timeout=30)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def hello(token, session, role=ROLE_DATA, routes=()):
    """A HELLO frame (spec §5.1): version 1..1, max_frame 16384, window 256 KiB."""
    tok = token.encode()
    agent = b"test_faults"
    body = struct.pack(">HHBBHII16s", 1, 1, role, 0, 0, 16384, 262144, session)
    body += struct.pack(">H", len(tok)) + tok + struct.pack(">H", len(agent)) + agent
    body += struct.pack(">B", len(routes))
    for port in routes:
        body += struct.pack(">BH", 1, port)
    return HDR.pack(len(body), 0, 0, A_HELLO, 0, 0) + body


class FrameReader:
    def __init__(self, s):
        self.s, self.buf = s, b""

    def next(self, timeout=10):
        """The next frame (length, uc, sid, action, payload), or None when the peer closed."""
        deadline = time.monotonic() + timeout
        for _ in range(10_000):
            if len(self.buf) >= HDR.size:
                length, uc, sid, action, flags, _ = HDR.unpack_from(self.buf)
                if len(self.buf) >= HDR.size + length:
                    body = self.buf[HDR.size:HDR.size + length]
                    self.buf = self.buf[HDR.size + length:]
                    return length, uc, sid, action, body
            left = deadline - time.monotonic()
            assert left > 0, "no frame in time"
            self.s.settimeout(left)
            try:
                data = self.s.recv(64 * KiB)
            except (ssl.SSLError, OSError):
                return None
            if not data:
                return None
            self.buf += data
        raise AssertionError("frame reader: too many reads")

    def until(self, action, timeout=10):
        for _ in range(1000):
            f = self.next(timeout)
            if f is None or f[3] == action:
                return f
        raise AssertionError("too many frames")


def expect_close(rd, code):
    f = rd.until(A_ERROR)
    assert f is not None, "closed without an ERROR frame"
    assert (f[1], f[2]) == (0, 0) and struct.unpack_from(">H", f[4])[0] == code, f
    assert rd.until(-1) is None, "still open after a connection ERROR"


BAD_FRAMES = {
    # name: (bytes after the handshake, connection error code)
    "oversized": (HDR.pack(1 << 20, 0, 0, A_PING, 0, 0), 0x0003),
    "length_ffffffff": (HDR.pack(0xFFFFFFFF, 5, 1, A_DATA, 0, 0), 0x0003),
    "second_hello": (None, 0x0007),
    "welcome_from_origin": (HDR.pack(34, 0, 0, A_WELCOME, 0, 0) + struct.pack(
        ">HBBI16sIIB1s", 1, ROLE_DATA, 0, 16384, b"\x01" * 16, 1, 0, 1, b"t"), 0x0006),
    "unknown_action": (HDR.pack(0, 0, 0, 0x66, 0, 0), 0x0004),
    "reserved_bits": (HDR.pack(8, 0, 0, A_PING, 0, 9) + b"\0" * 8, 0x0002),
    "unknown_flag": (HDR.pack(8, 0, 0, A_PING, 0x80, 0) + b"\0" * 8, 0x0002),
    "short_ping": (HDR.pack(3, 0, 0, A_PING, 0, 0) + b"\0\0\0", 0x0005),
    "cancel_on_data_without_stream_ids": (HDR.pack(2, 0, 0, A_CANCEL, 0, 0) + b"\0\0", 0x0002),
}


def test_bad_frames_after_a_valid_handshake(edge, origin, services):
    size = 128 * MiB
    src = services.add(SourceService(size, seed=52))
    e, o = serve(edge, origin, [src], "good")
    e2_port = e.ports[0]
    # The attacker has a valid token of its own tunnel (another port would do; none is
    # needed to send frames).
    evil = mint_token(e.token_key, "evil")
    result = {}

    def reader():
        with connect(e2_port) as c:
            result["r"] = read_stream(c, time.monotonic() + 200, limit=size)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    (rec,) = src.wait_conns(1)
    wait_until(lambda: rec.sent >= 4 * MiB, 60, "the download to flow")

    for name, (payload, code) in BAD_FRAMES.items():
        s, rd = _hs_no_routes(e, evil)
        s.sendall(payload if payload is not None else hello(evil, os.urandom(16)))
        expect_close(rd, code)
        s.close()

    # Truncated: half a header, then the connection ends; and half a payload.
    for piece in (HDR.pack(8, 0, 0, A_PING, 0, 0)[:7], HDR.pack(8, 0, 0, A_PING, 0, 0) + b"\0"):
        s, rd = _hs_no_routes(e, evil)
        s.sendall(piece)
        s.close()

    # Out of order but not fatal: DATA, END and WINDOW for streams never opened are answered
    # with a stream ERROR (unknown_stream); the connection stays and still answers PING.
    s, rd = _hs_no_routes(e, evil)
    for action, body in ((A_DATA, b"x" * 10), (A_END, b""), (A_WINDOW, struct.pack(">I", 5))):
        s.sendall(HDR.pack(len(body), 77, 3, action, 0, 0) + body)
        f = rd.until(A_ERROR)
        assert f is not None and (f[1], f[2]) == (77, 3), f
        assert struct.unpack_from(">H", f[4])[0] == 0x0202, f
    s.sendall(HDR.pack(8, 0, 0, A_PING, 0, 0) + struct.pack(">Q", 1234))
    f = rd.until(A_PONG)
    assert f is not None and struct.unpack(">Q", f[4]) == (1234,), f
    s.close()

    t.join(220)
    assert not t.is_alive()
    r = result["r"]
    assert r.error is None and r.eof and r.count == size and r.digest == pattern_digest(52, size)
    assert e.proc.alive() and o.proc.alive()
    assert o.proc.stop(grace=10) == 0
    assert e.proc.stop(grace=10) == 0
    st = e.proc.stats()
    for name, code in (("frame_too_large", 2), ("unexpected", 1), ("wrong_socket", 1),
                       ("unknown_action", 1), ("bad_header", 3), ("bad_payload", 1),
                       ("unknown_stream", 3)):
        assert as_int(st, f"frame_errors_{name}") >= code, (name, st)


def _hs_no_routes(e, token):
    s = _tls(e.tunnel_port)
    s.sendall(hello(token, os.urandom(16)))
    rd = FrameReader(s)
    f = rd.next()
    assert f is not None and f[3] == A_WELCOME, f
    return s, rd


# ---------------------------------------------------------------------------------------------
# A flood of forged tokens


def test_bad_token_flood_is_refused_and_counted(edge, origin, services):
    size = 64 * MiB
    src = services.add(SourceService(size, seed=61))
    e, o = serve(edge, origin, [src], "victim")
    good = e.token("victim", tcp=e.ports)
    head, body, _ = good.split(".")
    result = {}

    def reader():
        with connect(e.ports[0]) as c:
            result["r"] = read_stream(c, time.monotonic() + 200, limit=size)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    n, workers = 300, 6
    refused = []
    lock = threading.Lock()

    def flood(k):
        rnd = random.Random(k)
        for i in range(k, n, workers):
            forged = f"{head}.{body}.{b64url(rnd.randbytes(32))}"  # a well-formed MAC
            s = _tls(e.tunnel_port)
            s.sendall(hello(forged, rnd.randbytes(16), routes=e.ports))
            f = FrameReader(s).until(A_ERROR, timeout=30)
            s.close()
            with lock:
                refused.append(None if f is None else struct.unpack_from(">H", f[4])[0])

    fl = [threading.Thread(target=flood, args=(k,), daemon=True) for k in range(workers)]
    for x in fl:
        x.start()
    for x in fl:
        x.join(180)
    assert not any(x.is_alive() for x in fl)
    assert len(refused) == n and set(refused) == {0x0102}, set(refused)  # auth_signature
    t.join(220)
    r = result["r"]
    assert r.error is None and r.count == size and r.digest == pattern_digest(61, size)
    # The flood never served the tunnel's port: the real session is the only one.
    assert len(e.proc.events("session_up")) == 1
    assert o.proc.stop(grace=10) == 0
    assert e.proc.stop(grace=10) == 0
    assert as_int(e.proc.stats(), "handshake_refused_auth_signature") == n


# ---------------------------------------------------------------------------------------------
# --max-frame: what WELCOME announces is what the edge accepts


def test_max_frame_is_announced_and_enforced(edge, origin, services):
    size = 16 * MiB
    src = services.add(SourceService(size, seed=71))
    echo = services.add(EchoService())
    e = edge(ports=2, extra=("--max-frame", "4096"))
    o = origin(e, e.token("small", tcp=e.ports), {e.ports[0]: src.port, e.ports[1]: echo.port})
    # Downloads and echoes still work: the origin keeps its DATA within 4096 bytes.
    with connect(e.ports[0]) as c:
        r = read_stream(c, time.monotonic() + 120, limit=size)
    assert r.error is None and r.count == size and r.digest == pattern_digest(71, size)
    with connect(e.ports[1]) as c:
        c.sendall(b"q" * 100_000)
        c.shutdown(socket.SHUT_WR)
        back = read_stream(c, time.monotonic() + 60, limit=100_000)
    assert back.count == 100_000 and back.error is None
    # A client that sends more than it was told gets frame_too_large.
    s = _tls(e.tunnel_port)
    s.sendall(hello(mint_token(e.token_key, "big"), os.urandom(16)))
    rd = FrameReader(s)
    welcome = rd.next()
    assert welcome is not None and welcome[3] == A_WELCOME, welcome
    assert struct.unpack_from(">I", welcome[4], 4) == (4096,), welcome  # WELCOME.max_frame
    s.sendall(HDR.pack(4097, 5, 1, A_DATA, 0, 0) + b"x" * 4097)
    expect_close(rd, 0x0003)
    s.close()
    assert o.proc.alive()


# ---------------------------------------------------------------------------------------------
# The control worker's real-time policy and its CPU budget


def _thread(pid, comm):
    """(tid, policy, nice) of the thread of `pid` named `comm` (policy: 0 SCHED_OTHER, 1
    SCHED_FIFO; proc(5), fields 41 and 19 of /proc/PID/task/TID/stat), or None."""
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/comm") as f:
                if f.read().strip() != comm:
                    continue
            with open(f"/proc/{pid}/task/{task}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        return int(task), int(fields[38]), int(fields[16])
    return None


def _thread_policy(pid, comm):
    t = _thread(pid, comm)
    return None if t is None else t[1]


def _fifo_allowed():
    """Whether this runner may use SCHED_FIFO at all (root without CAP_SYS_NICE, or a cgroup
    with no real-time time, may not)."""
    return subprocess.run(["chrt", "-f", "1", "true"], capture_output=True, timeout=10).returncode == 0


def test_control_worker_is_realtime_and_a_ping_flood_demotes_it(edge, origin, services):
    """Both control workers run SCHED_FIFO (with SCHED_RESET_ON_FORK) at nice -10; a peer
    flooding a control socket with PINGs makes edged's spend its CPU budget, so it drops to
    SCHED_OTHER at nice 0 at once (counted, logged) while the flood lasts, and goes back to
    SCHED_FIFO about a second after it; the tunnel carries on throughout."""
    import pytest
    if not _fifo_allowed():
        pytest.skip("this runner may not use SCHED_FIFO (chrt -f 1 true failed)")
    from admin_helpers import metrics, with_admin

    echo = services.add(EchoService())
    e, e_admin = with_admin(edge, ports=1)
    o = origin(e, e.token("good", tcp=e.ports), {e.ports[0]: echo.port})
    FIFO, OTHER = 1, 0
    wait_until(lambda: _thread_policy(e.proc.pid, "et-control") == FIFO, 10, "edged FIFO")
    wait_until(lambda: _thread_policy(o.proc.pid, "et-control") == FIFO, 10, "originctl FIFO")
    tid, _, nice = _thread(e.proc.pid, "et-control")
    assert nice == -10
    assert os.sched_getscheduler(tid) == os.SCHED_FIFO | os.SCHED_RESET_ON_FORK
    assert _thread_policy(e.proc.pid, "et-worker-0") == OTHER
    m = metrics(e_admin)
    assert m.value("edgetunnel_control_realtime") == 1
    assert m.value("edgetunnel_control_demotions_total") == 0

    s, rd = _hs_no_routes_role(e, mint_token(e.token_key, "evil"), ROLE_CONTROL)
    blob = b"".join(HDR.pack(8, 0, 0, A_PING, 0, 0) + struct.pack(">Q", i) for i in range(4096))
    s.setblocking(False)
    pos, pongs, why = 0, 0, None

    def pump(seconds, until=None):
        """Send PINGs and read PONGs on the one socket for at most `seconds`, or until
        `until()`; returns the seconds it took. Any end of the socket fails the test."""
        nonlocal pos, pongs
        t0 = time.monotonic()
        for _ in range(10_000_000):
            if time.monotonic() - t0 > seconds or (until is not None and until()):
                return time.monotonic() - t0
            r, w, _ = select.select([s], [s], [], 0.1)
            if r:
                try:
                    data = s.recv(256 * KiB)
                    assert data, "edged closed the flooding socket"
                    pongs += len(data) // (HDR.size + 8)
                except ssl.SSLWantReadError:
                    pass
            if w:
                try:
                    pos = (pos + s.send(blob[pos:])) % len(blob)
                except ssl.SSLWantWriteError:
                    pass
        raise AssertionError("pump: too many turns")

    took = pump(20, until=lambda: bool(e.proc.events("control_demoted")))
    (ev,) = e.proc.events("control_demoted")
    assert took < 10, f"no demotion within {took:.1f} s of flooding"
    assert 20_000 < int(ev["cpu_us"]) < 80_000 and int(ev["wall_us"]) < 1_000_000, ev
    pump(0.5)  # the flood goes on: it stays demoted
    tid2, policy, nice = _thread(e.proc.pid, "et-control")
    assert (tid2, policy, nice) == (tid, OTHER, 0)
    assert os.sched_getscheduler(tid) == os.SCHED_OTHER | os.SCHED_RESET_ON_FORK
    m = metrics(e_admin)
    assert m.value("edgetunnel_control_demotions_total") == 1
    assert m.value("edgetunnel_control_realtime") == 0
    assert not e.proc.events("control_promoted")
    echo_roundtrip(e.ports[0])  # the tunnel still works, flood or not
    s.close()
    assert pongs > 0
    t_stop = time.monotonic()
    e.proc.wait_event("control_promoted", timeout=10, policy="fifo")
    assert time.monotonic() - t_stop > 0.5  # a second after the last overspent window
    assert _thread(e.proc.pid, "et-control")[1:] == (FIFO, -10)
    assert os.sched_getscheduler(tid) == os.SCHED_FIFO | os.SCHED_RESET_ON_FORK
    assert metrics(e_admin).value("edgetunnel_control_realtime") == 1
    echo_roundtrip(e.ports[0])
    assert o.proc.stop(grace=10) == 0
    assert e.proc.stop(grace=10) == 0
    assert as_int(e.proc.stats(), "control_demotions") == 1
    assert as_int(o.proc.stats(), "control_demotions") == 0
    assert not e.proc.events("control_fifo_off")


def _hs_no_routes_role(e, token, role, routes=()):
    s = _tls(e.tunnel_port)
    s.sendall(hello(token, os.urandom(16), role=role, routes=routes))
    rd = FrameReader(s)
    f = rd.next()
    assert f is not None and f[3] == A_WELCOME, f
    return s, rd


def test_control_worker_without_cap_sys_nice_falls_back(edge, origin, services, bindir, procs):
    """originctl without CAP_SYS_NICE, RLIMIT_RTPRIO 0 and RLIMIT_NICE 0: SCHED_FIFO and nice
    -10 are refused; it says so once (control_sched, at info), runs SCHED_OTHER, and the tunnel
    works as before."""
    import pytest
    if os.geteuid() != 0 or not _fifo_allowed():
        pytest.skip("needs root with SCHED_FIFO allowed, to drop it for originctl")
    from tunnel import Origin
    echo = services.add(EchoService())
    e = edge(ports=1)
    wrap = ["prlimit", "--rtprio=0:0", "--nice=0:0", "--",
            "setpriv", "--bounding-set", "-sys_nice", "--inh-caps", "-sys_nice", "--"]
    o = Origin(bindir, e, e.token("plain", tcp=e.ports), {e.ports[0]: echo.port}, procs.logdir,
               wrap=wrap)
    procs.add(o.proc)
    o.wait_ready()
    (ev,) = o.proc.events("control_sched")
    assert (ev.get("level"), ev.get("policy"), ev.get("nice"), ev.get("asked"),
            ev.get("errno")) == ("info", "other", "0", "fifo", str(errno.EPERM)), ev
    assert _thread(o.proc.pid, "et-control")[1:] == (0, 0)
    wait_until(lambda: _thread_policy(e.proc.pid, "et-control") == 1, 10, "edged FIFO")
    assert not e.proc.events("control_sched")  # FIFO granted: logged at debug only
    echo_roundtrip(e.ports[0])
    assert o.proc.stop(grace=10) == 0
    assert e.proc.stop(grace=10) == 0


# ---------------------------------------------------------------------------------------------
# Channel cancels (spec §5.7) stay inside the sender's session

A_CANCEL_ACK = 0x21
F_CANCEL_CHANNEL = 0x01


def test_channel_cancel_resets_only_the_senders_streams(edge, origin, services):
    """A CANCEL with flag CHANNEL from a peer resets the streams of that user channel in the
    peer's own session (answered `reset`), and no stream of another session whatever channel
    it names (answered `unknown`): the other tunnel's connection still echoes."""
    echo = services.add(EchoService())
    e = edge(ports=2)
    good_port, evil_port = e.ports
    o = origin(e, e.token("good", tcp=[good_port]), {good_port: echo.port})
    held = connect(good_port)
    held.sendall(b"before")
    assert held.recv(64) == b"before"

    s, rd = _hs_no_routes_role(e, mint_token(e.token_key, "evil", tcp=[evil_port]), ROLE_DATA,
                               routes=(evil_port,))
    victim = connect(evil_port)
    f = rd.until(A_OPEN)
    assert f is not None, "edged sent no OPEN"
    uc = f[1]
    # Every other channel number: none is this session's, so nothing may be reset.
    for other in range(1, 17):
        if other == uc:
            continue
        s.sendall(HDR.pack(10, other, 0, A_CANCEL, F_CANCEL_CHANNEL, 0) + struct.pack(">HQ", 1, 7))
        ack = rd.until(A_CANCEL_ACK)
        assert ack is not None and (ack[1], ack[2], ack[4][0]) == (other, 0, 1), ack  # unknown
    held.sendall(b"still here")
    assert held.recv(64) == b"still here"
    # Its own channel: the victim's connection is reset.
    s.sendall(HDR.pack(10, uc, 0, A_CANCEL, F_CANCEL_CHANNEL, 0) + struct.pack(">HQ", 1, 8))
    ack = rd.until(A_CANCEL_ACK)
    assert ack is not None and (ack[1], ack[2], ack[4][0]) == (uc, 0, 0), ack  # reset
    victim.settimeout(10)
    try:
        got = victim.recv(64)
    except ConnectionResetError:
        got = b""
    assert got == b"", got
    victim.close()
    s.close()
    held.sendall(b"after")
    assert held.recv(64) == b"after"
    held.close()
    assert o.proc.stop(grace=10) == 0
    assert e.proc.stop(grace=10) == 0
