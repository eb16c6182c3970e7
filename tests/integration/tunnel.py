"""Helpers for the tunnel integration tests: ports, certificates, tokens, processes, services.

Everything here is real: `openssl` makes the edge's certificate and token key, the binaries run
as child processes stopped by their PID, and the local services and public clients are plain
sockets on 127.0.0.1 inside the pytest process (so their time stamps share one monotonic clock).

Every wait is bounded twice: by a deadline and by an iteration count.
"""
import base64
import errno
import functools
import hashlib
import hmac
import json
import os
import pathlib
import random
import re
import signal
import socket
import struct
import subprocess
import threading
import time

LOCAL = "127.0.0.1"
KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
CHUNK = MiB  # unit of the deterministic byte streams

# Generous bounds: the suite runs under AddressSanitizer.
START_TIMEOUT = 30.0  # a binary logs that it is listening / ready
EXIT_TIMEOUT = 30.0  # a refused origin exits
STOP_GRACE = 5.0  # SIGTERM, then this long, then SIGKILL
IO_TIMEOUT = 60.0  # one blocking client socket call (backstop; tests use their own deadlines)
SERVICE_IO_TIMEOUT = 300.0  # one blocking service socket call (a stalled reader may sit long)
POLL = 0.02  # seconds between polls of a log file or a record
MAX_IO_CALLS = 1 << 24  # cap on the socket calls of one service loop (each moves >= 1 byte)

now_ns = time.monotonic_ns

# SIGTERM drains (GOAWAY, in-flight streams finish): a short bound, so that stopping a process
# in teardown stays well inside STOP_GRACE even when a test leaves a stream open. Tests of the
# drain itself pass their own --drain-timeout after it (the last flag wins).
DRAIN_DEFAULT = ("--drain-timeout", "1s")


def _poll_count(timeout):
    """The iteration cap that goes with a deadline (a bounded loop also ends by count)."""
    return int(timeout / POLL) + 100


def wait_until(pred, timeout, what, interval=POLL):
    """Poll pred() until it returns a truthy value (returned), at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 100):
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")


# ---------------------------------------------------------------------------------------------
# Ports, certificates, token keys and tokens


# Every port handed out in this run. The kernel's pick for a service's listener may be a port
# an edge was given but does not listen on (yet, or ever, as in the refused-token tests): the
# test would then reach the service where it meant to reach the edge.
_HANDED = set()


def _fresh_bound(n, make):
    """n sockets from make(), each bound to a kernel-picked 127.0.0.1 port not handed out before
    in this run. Rejected picks stay bound until the end so the kernel cannot pick them again."""
    good, rejected = [], []
    try:
        for _ in range(n + 64):
            if len(good) == n:
                break
            s = make()
            s.bind((LOCAL, 0))
            port = s.getsockname()[1]
            (rejected if port in _HANDED else good).append(s)
            _HANDED.add(port)
        if len(good) < n:
            raise AssertionError(f"no {n} fresh ports after {n + 64} picks")
        return good
    except BaseException:
        for s in good:
            s.close()
        raise
    finally:
        for s in rejected:
            s.close()


def listen_local(backlog=1024, reuse=False):
    """A TCP listener on 127.0.0.1, on a port no other part of this run was given."""
    def make():
        s = socket.socket()
        if reuse:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        return s

    (s,) = _fresh_bound(1, make)
    s.listen(backlog)
    return s


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago and not handed out before in this run."""
    return free_ports(1)[0]


def free_ports(n):
    """n distinct free ports, none handed out before in this run."""
    socks = _fresh_bound(n, socket.socket)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _run(argv, input=None, timeout=30):
    r = subprocess.run(argv, input=input, capture_output=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"{argv[0]} failed ({r.returncode}): {r.stderr.decode(errors='replace')}")
    return r.stdout


class Pki:
    """The edge's certificate: EC P-256, self-signed, CN and SAN localhost / 127.0.0.1."""

    def __init__(self, directory):
        d = pathlib.Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.cert = d / "edge.pem"
        self.key = d / "edge.key"
        _run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-nodes", "-keyout", str(self.key), "-out", str(self.cert), "-days", "7",
              "-subj", "/CN=localhost",
              "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        self.pin = spki_pin(self.cert)


def spki_pin(cert_path):
    """'sha256:<hex>' of the DER SubjectPublicKeyInfo, computed the way operators do it."""
    pub = _run(["openssl", "x509", "-in", str(cert_path), "-pubkey", "-noout"])
    der = _run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub)
    digest = _run(["sha256sum"], input=der).split()[0].decode()
    assert re.fullmatch(r"[0-9a-f]{64}", digest), digest
    return "sha256:" + digest


def make_token_key(path):
    """A token key file: 32 random bytes, base64, as `openssl rand -base64 32` writes it."""
    path = pathlib.Path(path)
    path.write_bytes(_run(["openssl", "rand", "-base64", "32"]))
    os.chmod(path, 0o600)
    return path


def token_key_bytes(path):
    """The HMAC key a key file holds: its bytes but one trailing newline (include/et/token.h)."""
    b = pathlib.Path(path).read_bytes()
    if b.endswith(b"\r\n"):
        return b[:-2]
    if b.endswith(b"\n"):
        return b[:-1]
    return b


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def mint_token(key_path, name, tcp=(), hosts=(), iat=None, exp=None):
    """An HS256 JWT made here (for claims `edged token` cannot issue, e.g. long expired)."""
    t = int(time.time())
    claims = {"exp": t + 3600 if exp is None else exp, "hosts": list(hosts),
              "iat": t if iat is None else iat, "sub": name, "tcp": list(tcp)}
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    mac = hmac.new(token_key_bytes(key_path), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(mac)}"


def decode_token(token):
    """(header, claims, signing input, mac) of a JWS compact token, nothing verified."""
    head, body, mac = token.split(".")
    return (json.loads(b64url_decode(head)), json.loads(b64url_decode(body)),
            f"{head}.{body}".encode(), b64url_decode(mac))


# ---------------------------------------------------------------------------------------------
# Deterministic byte streams: chunk k of stream `seed` can be made on its own.


def pattern_chunk(seed, k):
    return random.Random((seed << 32) | k).randbytes(CHUNK)


def pattern_iter(seed, nbytes):
    """The first nbytes of stream `seed`, in chunks of CHUNK bytes (the last may be shorter)."""
    for k in range((nbytes + CHUNK - 1) // CHUNK):
        c = pattern_chunk(seed, k)
        yield c if (k + 1) * CHUNK <= nbytes else c[: nbytes - k * CHUNK]


def pattern_prefix(seed, nbytes):
    return b"".join(pattern_iter(seed, nbytes))


@functools.lru_cache(maxsize=16)
def pattern_digest(seed, nbytes):
    h = hashlib.sha256()
    for c in pattern_iter(seed, nbytes):
        h.update(c)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Logs: one event per line, `ts=… level=… event=NAME key=value …`, values with spaces quoted.

_KV = re.compile(r'([A-Za-z_][\w.\-]*)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_kv(line):
    out = {}
    for k, v in _KV.findall(line):
        if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
            v = re.sub(r"\\(.)", r"\1", v[1:-1])
        out[k] = v
    return out


def as_int(fields, key):
    """fields[key] as an int; a test that relies on a counter fails loudly when it is absent."""
    assert key in fields, f"no {key}= in {fields}"
    return int(fields[key])


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "WARNING: ThreadSanitizer", "ERROR: UndefinedBehaviorSanitizer")


class Proc:
    """A binary started by a test: stdout and stderr go to files; stopped by its PID."""

    def __init__(self, name, argv, logdir):
        self.name = name
        self.argv = [str(a) for a in argv]
        logdir = pathlib.Path(logdir)
        logdir.mkdir(parents=True, exist_ok=True)
        n = 0
        while (logdir / f"{name}.{n}.stderr").exists() and n < 1000:
            n += 1
        self.stderr_path = logdir / f"{name}.{n}.stderr"
        self.stdout_path = logdir / f"{name}.{n}.stdout"
        self._err = open(self.stderr_path, "wb")
        self._out = open(self.stdout_path, "wb")
        self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._out,
                                      stderr=self._err, start_new_session=True)
        self.pid = self.popen.pid
        self._lines = []
        self._partial = b""
        self._offset = 0
        self.returncode = None

    # -- logs
    def lines(self):
        """Every complete stderr line so far (read incrementally)."""
        with open(self.stderr_path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        self._lines.extend(x.decode(errors="replace") for x in complete)
        return self._lines

    def events(self, event=None, **match):
        """Parsed log lines with event=`event` whose fields equal every `match` value."""
        out = []
        for line in self.lines():
            if "event=" not in line:
                continue
            f = parse_kv(line)
            if event is not None and f.get("event") != event:
                continue
            if all(f.get(k) == str(v) for k, v in match.items()):
                out.append(f)
        return out

    def wait_event(self, event, timeout=START_TIMEOUT, count=1, **match):
        """Wait until `count` matching events are logged; returns them. Fails at once if the
        process exits first."""
        deadline = time.monotonic() + timeout
        for _ in range(_poll_count(timeout)):
            evs = self.events(event, **match)
            if len(evs) >= count:
                return evs
            if self.popen.poll() is not None:
                evs = self.events(event, **match)  # lines written just before exiting
                if len(evs) >= count:
                    return evs
                raise AssertionError(f"{self.name} exited ({self.popen.returncode}) before "
                                     f"{count}x event={event} {match}\n{self.tail()}")
            if time.monotonic() >= deadline:
                break
            time.sleep(POLL)
        raise AssertionError(f"{self.name}: no {count}x event={event} {match} within "
                             f"{timeout:.0f} s\n{self.tail()}")

    def wait_for(self, regex, timeout=START_TIMEOUT):
        """Wait for a stderr line matching `regex` (re.search); returns the match."""
        rx = re.compile(regex)
        deadline = time.monotonic() + timeout
        for _ in range(_poll_count(timeout)):
            for line in self.lines():
                m = rx.search(line)
                if m:
                    return m
            if self.popen.poll() is not None and not any(rx.search(x) for x in self.lines()):
                raise AssertionError(f"{self.name} exited ({self.popen.returncode}) before "
                                     f"/{regex}/\n{self.tail()}")
            if time.monotonic() >= deadline:
                break
            time.sleep(POLL)
        raise AssertionError(f"{self.name}: no /{regex}/ within {timeout:.0f} s\n{self.tail()}")

    def tail(self, n=40):
        lines = self.lines() + ([self._partial.decode(errors="replace")] if self._partial else [])
        body = "\n".join(lines[-n:])
        return f"--- {self.name} (pid {self.pid}) {' '.join(self.argv)}\n{body}"

    def sanitizer_report(self):
        text = "\n".join(self.lines())
        return next((m for m in SANITIZER_MARKS if m in text), None)

    def stdout(self):
        return self.stdout_path.read_text(errors="replace")

    # -- life
    def alive(self):
        return self.popen.poll() is None

    def wait_exit(self, timeout=EXIT_TIMEOUT):
        """The exit status, waiting at most `timeout` (then the test fails; teardown kills)."""
        try:
            self.returncode = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running after {timeout:.0f} s\n{self.tail()}")
        self._close_files()
        return self.returncode

    def stop(self, grace=STOP_GRACE):
        """SIGTERM by PID, wait up to `grace` s, then SIGKILL. Returns the exit status
        (negative: killed by that signal)."""
        if self.popen.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(timeout=grace)
        self.returncode = self.popen.returncode
        self._close_files()
        return self.returncode

    def _close_files(self):
        for f in (self._err, self._out):
            if not f.closed:
                f.close()

    def stats(self):
        """The fields of the last event=stats line (logged on SIGTERM)."""
        evs = self.events("stats")
        assert evs, f"{self.name} logged no event=stats\n{self.tail()}"
        return evs[-1]


# ---------------------------------------------------------------------------------------------
# The two binaries


class Edge:
    """A running `edged` with its tunnel port and the public TCP ports it may serve."""

    def __init__(self, bindir, pki, token_key, logdir, ports=1, threads=2, extra=()):
        self.bindir = pathlib.Path(bindir)
        self.pki = pki
        self.token_key = token_key
        self.ports = free_ports(ports) if isinstance(ports, int) else list(ports)
        lo, hi = min(self.ports), max(self.ports)
        for attempt in range(3):  # the tunnel port may be taken between pick and bind
            self.tunnel_port = free_port()
            self.proc = Proc("edged", [
                self.bindir / "edged", "--tunnel", f"{LOCAL}:{self.tunnel_port}",
                "--cert", pki.cert, "--key", pki.key, "--token-key", token_key,
                "--tcp-ports", f"{lo}-{hi}", "--tcp-bind", LOCAL,
                "--threads", threads, *DRAIN_DEFAULT, *extra], logdir)
            try:
                self.proc.wait_event("listening", tunnel=f"{LOCAL}:{self.tunnel_port}")
                return
            except AssertionError:
                in_use = not self.proc.alive() and re.search(
                    r"in use|EADDRINUSE", "\n".join(self.proc.lines()), re.I)
                self.proc.stop()
                if not in_use or attempt == 2:
                    raise

    @property
    def addr(self):
        return f"{LOCAL}:{self.tunnel_port}"

    def token(self, name, tcp=(), hosts=(), ttl="1h", key=None):
        """A token from `edged token` (the last line of its stdout)."""
        argv = [str(self.bindir / "edged"), "token", "--token-key", str(key or self.token_key),
                "--name", name]
        for h in hosts:
            argv += ["--http", h]
        for p in tcp:
            argv += ["--tcp", str(p)]
        argv += ["--ttl", ttl]
        out = _run(argv).decode().strip().splitlines()
        assert out, "edged token printed nothing"
        return out[-1].strip()

    def refusals(self, **match):
        return self.proc.events("handshake_refused", **match)


class Origin:
    """A running `originctl connect`."""

    def __init__(self, bindir, edge, token, tcp, logdir, pin=None, data_conns=None,
                 no_control=False, threads=2, extra=(), edge_addr=None, wrap=()):
        """edge_addr: what --edge says (default: the edge's address; "": no --edge flag, a
        --config file in `extra` names the edge); wrap: argv words that exec originctl in the
        end (so the PID stays originctl's)."""
        self.edge = edge
        self.tcp = dict(tcp)
        self.no_control = no_control
        self.data_conns = data_conns
        edge_flag = [] if edge_addr == "" else ["--edge", edge_addr or edge.addr]
        argv = [*wrap, pathlib.Path(bindir) / "originctl", "connect", *edge_flag,
                "--token", token, "--pin", pin or edge.pki.pin, "--threads", threads,
                *DRAIN_DEFAULT]
        for pub, local in self.tcp.items():
            argv += ["--tcp", f"{pub}={LOCAL}:{local}"]
        if data_conns is not None:
            argv += ["--data-conns", data_conns]
        if no_control:
            argv += ["--no-control"]
        self.proc = Proc("originctl", argv + list(extra), logdir)
        self.session = None

    def wait_ready(self, timeout=START_TIMEOUT):
        """Wait for event=ready, check it against the flags, and wait until the edge has
        logged every socket of this session and serves every public port."""
        ready = self.proc.wait_event("ready", timeout)[0]
        self.session = ready.get("session", "").lower()
        assert re.fullmatch(r"[0-9a-f]{32}", self.session), f"session id: {ready}"
        control = as_int(ready, "control")
        data = as_int(ready, "data")
        assert control == (0 if self.no_control else 1), ready
        assert data == (4 if self.data_conns is None else self.data_conns), ready
        ups = self.edge.proc.wait_event("socket_up", timeout, count=control + data,
                                        session=self.session)
        roles = sorted(u.get("role") for u in ups)
        assert roles == sorted(["control"] * control + ["data"] * data), ups
        for pub in self.tcp:
            self.edge.proc.wait_event("tcp_listen", timeout, port=pub)
        self.ready = ready
        return ready


# ---------------------------------------------------------------------------------------------
# Local services: threads in this process, listening on 127.0.0.1:0


def _errname(e):
    if isinstance(e, socket.timeout):
        return "timeout"
    if isinstance(e, OSError) and e.errno in errno.errorcode:
        return errno.errorcode[e.errno]
    return f"{type(e).__name__}: {e}"


def abort(sock):
    """Close abortively: SO_LINGER {1,0}, so the peer gets RST."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class ConnRecord:
    """What a service saw on one accepted connection (times are time.monotonic_ns())."""

    def __init__(self, index, sock):
        self.index = index
        self.sock = sock
        self.accept_ns = now_ns()
        self.sent = 0  # bytes the kernel accepted from us
        self.received = 0
        self.digest = None  # sha256 hex of what was sent (source) or received (sink)
        self.data = None  # received bytes, when the service keeps them
        self.eof_ns = None  # peer's FIN seen
        self.done_ns = None  # the handler finished normally
        self.error = None  # errno name of the first failure, e.g. ECONNRESET, EPIPE
        self.error_ns = None
        self.reset_ns = None  # when we reset the connection ourselves

    def fail(self, e):
        if self.error is None:
            self.error_ns = now_ns()
            self.error = _errname(e)

    def __repr__(self):
        return (f"<conn {self.index} sent={self.sent} received={self.received} "
                f"error={self.error} eof={self.eof_ns is not None} done={self.done_ns is not None}>")


class Service:
    """Accepts on 127.0.0.1:0 and runs handle(rec) in a thread per connection."""

    name = "service"

    def __init__(self):
        self.listener = listen_local(1024, reuse=True)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.conns = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"{self.name}-accept",
                                          daemon=True)
        self._acceptor.start()

    def _accept_loop(self):
        for _ in range(MAX_IO_CALLS):  # one pass per connection or per 0.2 s
            if self._stop.is_set():
                return
            try:
                s, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            s.settimeout(SERVICE_IO_TIMEOUT)
            with self._lock:
                rec = ConnRecord(len(self.conns), s)
                self.conns.append(rec)
                t = threading.Thread(target=self._run, args=(rec,), daemon=True,
                                     name=f"{self.name}-{rec.index}")
                self._threads.append(t)
            t.start()

    def _run(self, rec):
        try:
            self.handle(rec)
            if rec.error is None:
                rec.done_ns = now_ns()
        except Exception as e:  # recorded; the test inspects rec.error
            rec.fail(e)
        finally:
            try:
                rec.sock.close()
            except OSError:
                pass

    def handle(self, rec):
        raise NotImplementedError

    @property
    def accepted(self):
        return len(self.conns)

    def wait_conns(self, n, timeout=START_TIMEOUT):
        """The first n connection records, once n connections have been accepted."""
        wait_until(lambda: self.accepted >= n, timeout, f"{n} connections to {self.name}")
        return self.conns[:n]

    def stop(self, timeout=5.0):
        self._stop.set()
        try:
            self.listener.close()
        except OSError:
            pass
        with self._lock:
            recs, threads = list(self.conns), list(self._threads)
        for rec in recs:  # wakes handlers blocked in send/recv
            try:
                rec.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for t in [self._acceptor] + threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in [self._acceptor] + threads)


class SourceService(Service):
    """Sends nbytes of stream `seed` on every connection, then closes (FIN). With reset_after,
    resets the connection (SO_LINGER 0) once it has sent that many bytes. Records the first
    send failure (errno name and time) and the exact count the kernel accepted."""

    name = "source"

    def __init__(self, nbytes, seed, reset_after=None):
        self.nbytes, self.seed, self.reset_after = nbytes, seed, reset_after
        super().__init__()

    def handle(self, rec):
        s = rec.sock
        h = hashlib.sha256()
        limit = self.nbytes if self.reset_after is None else min(self.nbytes, self.reset_after)
        for chunk in pattern_iter(self.seed, limit):
            mv = memoryview(chunk)
            off = 0
            while off < len(mv):  # at most len(chunk) iterations: each send moves >= 1 byte
                if self._stop.is_set():
                    return
                try:
                    n = s.send(mv[off:off + 256 * KiB])  # small pieces: rec.sent stays exact
                except OSError as e:
                    rec.fail(e)
                    return
                off += n
                rec.sent += n
            h.update(chunk)
        if self.reset_after is not None and self.reset_after < self.nbytes:
            rec.reset_ns = now_ns()
            abort(s)
            return
        rec.digest = h.hexdigest()
        s.shutdown(socket.SHUT_WR)
        # Wait for the peer's EOF (or reset) so that close() does not turn into a RST while
        # it still has bytes for us.
        try:
            for _ in range(MAX_IO_CALLS):
                if not s.recv(64 * KiB):
                    break
        except OSError:
            pass


class SinkService(Service):
    """Reads to EOF and records sha256 and count; then sends `reply` (if any) and closes."""

    name = "sink"

    def __init__(self, reply=None, keep=False):
        self.reply, self.keep = reply, keep
        super().__init__()

    def handle(self, rec):
        s = rec.sock
        h = hashlib.sha256()
        buf = bytearray(MiB)
        kept = bytearray() if self.keep else None
        for _ in range(MAX_IO_CALLS):  # ends at EOF, on an error, or by timeout / stop()
            try:
                n = s.recv_into(buf)
            except OSError as e:
                rec.fail(e)
                return
            if n == 0:
                break
            h.update(memoryview(buf)[:n])
            if kept is not None:
                kept += buf[:n]
            rec.received += n
        else:
            raise OSError(errno.E2BIG, "too many recv calls")
        rec.eof_ns = now_ns()
        rec.digest = h.hexdigest()
        rec.data = bytes(kept) if kept is not None else None
        if self.reply:
            try:
                s.sendall(self.reply)
                rec.sent += len(self.reply)
            except OSError as e:
                rec.fail(e)
                return


class EchoService(Service):
    """Echoes every byte back; on EOF half-closes its side too, then closes."""

    name = "echo"

    def handle(self, rec):
        s = rec.sock
        for _ in range(MAX_IO_CALLS):  # ends at EOF, on an error, or by timeout / stop()
            try:
                data = s.recv(256 * KiB)
            except OSError as e:
                rec.fail(e)
                return
            if not data:
                break
            rec.received += len(data)
            try:
                s.sendall(data)
            except OSError as e:
                rec.fail(e)
                return
            rec.sent += len(data)
        else:
            raise OSError(errno.E2BIG, "too many recv calls")
        rec.eof_ns = now_ns()
        s.shutdown(socket.SHUT_WR)


class FuncService(Service):
    """Runs fn(rec) per connection: for a test's own script."""

    name = "func"

    def __init__(self, fn):
        self.fn = fn
        super().__init__()

    def handle(self, rec):
        self.fn(rec)


# ---------------------------------------------------------------------------------------------
# Public clients


def connect(port, timeout=IO_TIMEOUT):
    s = socket.create_connection((LOCAL, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def echo_roundtrip(port, payload=b"ping-through-the-tunnel"):
    """Send `payload` to an EchoService behind public `port` and return what came back (each
    pass reads >= 1 byte or fails; each read waits at most 20 s)."""
    c = connect(port)
    try:
        c.settimeout(20)
        c.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = c.recv(len(payload) - len(got))
            assert chunk, "closed before the echo came back"
            got += chunk
        return got
    finally:
        c.close()


class Received:
    """What a public client read: count, sha256, how it ended (eof, or error: an errno name)."""

    def __init__(self):
        self.count = 0
        self.hash = hashlib.sha256()
        self.eof = False
        self.error = None
        self.end_ns = None

    @property
    def digest(self):
        return self.hash.hexdigest()


def read_stream(sock, deadline, limit, upto=None, keep=None, into=None):
    """Read (hashing) until EOF, a connection error (recorded in .error, e.g. 'ECONNRESET'),
    or until `upto` bytes in all when given. Fails past the monotonic `deadline` or beyond
    `limit` bytes in all. `keep`, a bytearray, collects the bytes; `into`, a Received from an
    earlier call on the same socket, is continued (counts and hash cover both calls)."""
    r = into if into is not None else Received()
    buf = bytearray(MiB)
    mv = memoryview(buf)
    for _ in range(limit - r.count + 2):  # each pass moves >= 1 byte or ends
        want = len(buf) if upto is None else min(len(buf), upto - r.count)
        if want == 0:
            break
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"read timed out after {r.count} bytes")
        sock.settimeout(min(left, IO_TIMEOUT))
        try:
            n = sock.recv_into(mv[:want])
        except socket.timeout:
            raise AssertionError(f"read timed out after {r.count} bytes")
        except OSError as e:
            r.error = _errname(e)
            break
        if n == 0:
            r.eof = True
            break
        r.hash.update(mv[:n])
        if keep is not None:
            keep += mv[:n]
        r.count += n
        assert r.count <= limit, f"read more than {limit} bytes"
    r.end_ns = now_ns()
    return r


def send_pattern(sock, seed, nbytes, deadline):
    """Send the first nbytes of stream `seed`; returns the sha256 hex of what was sent."""
    h = hashlib.sha256()
    for chunk in pattern_iter(seed, nbytes):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("send timed out")
        sock.settimeout(min(left, IO_TIMEOUT))
        sock.sendall(chunk)
        h.update(chunk)
    return h.hexdigest()


def wait_closed(sock, timeout):
    """Read and discard until the peer closes. Returns (how, ns, bytes_read) with how 'eof'
    or an errno name such as 'ECONNRESET'; fails if still open after `timeout` s."""
    deadline = time.monotonic() + timeout
    got = 0
    for _ in range(1_000_000):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            data = sock.recv(64 * KiB)
        except socket.timeout:
            break
        except OSError as e:
            return _errname(e), now_ns(), got
        if not data:
            return "eof", now_ns(), got
        got += len(data)
    raise AssertionError(f"connection still open after {timeout:.1f} s ({got} bytes read)")


def percentile(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
    return xs[k]


def measure(**kv):
    """Print a figure for `pytest -s` (informational, never asserted)."""
    body = " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in kv.items())
    print(f"MEASURE {body}", flush=True)


def socket_buffer_max():
    """(send, receive): the most bytes one socket's kernel buffers can hold here, by autotuning
    (tcp_wmem / tcp_rmem) or by SO_SNDBUF / SO_RCVBUF (twice wmem_max / rmem_max)."""

    def read(name):
        return [int(x) for x in pathlib.Path("/proc/sys/net", name).read_text().split()]

    snd = max(read("ipv4/tcp_wmem")[2], 2 * read("core/wmem_max")[0])
    rcv = max(read("ipv4/tcp_rmem")[2], 2 * read("core/rmem_max")[0])
    return snd, rcv
