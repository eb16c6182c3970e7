"""Shared fixtures for the integration tests: where the binaries are, and process cleanup.

Tunnel fixtures (see tunnel.py for the helpers they build on):

    pki          session: the edge's certificate, key and pin (openssl, EC P-256, localhost)
    token_key    session: the edge's token key file (openssl rand -base64 32)
    services     per test: services.add(SourceService(...)) registers a local service; every
                 registered service is stopped in teardown
    procs        per test: every binary a test starts; in teardown each is stopped by its PID
                 (SIGTERM, up to 5 s, then SIGKILL), newest first; a sanitizer report in any
                 log fails the test; on failure the tail of every log is printed
    edge         per test: edge(ports=1, threads=2, extra=()) -> tunnel.Edge, listening
    origin       per test: origin(edge, token, {public_port: local_port}, data_conns=None,
                 no_control=False, threads=2, ready=True) -> tunnel.Origin (ready: waits for
                 event=ready, the edge's socket_up lines and tcp_listen for every public port)
"""
import os
import pathlib
import resource

import pytest

import tunnel

ROOT = pathlib.Path(__file__).resolve().parents[2]

# 500 public clients and their 500 service-side sockets live in this process.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _hard == resource.RLIM_INFINITY or _hard > 8192:
    _want = 8192
else:
    _want = _hard
if _soft != resource.RLIM_INFINITY and _soft < _want:
    resource.setrlimit(resource.RLIMIT_NOFILE, (_want, _hard))


@pytest.fixture(scope="session")
def bindir():
    d = ROOT / os.environ.get("ET_BUILD_DIR", "build/current")
    for name in ("edged", "originctl"):
        assert (d / name).exists(), f"{d / name} is not built (make)"
    return d


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return tunnel.Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def token_key(tmp_path_factory):
    return tunnel.make_token_key(tmp_path_factory.mktemp("keys") / "token.key")


class Services:
    def __init__(self):
        self.items = []

    def add(self, service):
        self.items.append(service)
        return service

    def stop_all(self):
        stuck = [s.name for s in reversed(self.items) if not s.stop()]
        self.items.clear()
        return stuck


@pytest.fixture
def services():
    group = Services()
    yield group
    stuck = group.stop_all()
    assert not stuck, f"service threads still running after stop: {stuck}"


class Procs:
    def __init__(self, logdir):
        self.logdir = logdir
        self.items = []

    def add(self, proc):
        self.items.append(proc)
        return proc


@pytest.fixture
def procs(request, tmp_path, services):
    group = Procs(tmp_path / "logs")
    yield group
    for p in reversed(group.items):
        p.stop()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for p in group.items:
            print(p.tail(60))
    reports = [(p.name, p.pid, p.sanitizer_report()) for p in group.items]
    bad = [r for r in reports if r[2]]
    assert not bad, "sanitizer report in " + ", ".join(
        f"{n} (pid {pid}): {m}; see {group.logdir}" for n, pid, m in bad)


@pytest.fixture
def edge(bindir, pki, token_key, procs):
    def start(ports=1, threads=2, extra=()):
        e = tunnel.Edge(bindir, pki, token_key, procs.logdir, ports=ports, threads=threads,
                        extra=extra)
        procs.add(e.proc)
        return e

    return start


@pytest.fixture
def origin(bindir, procs):
    def start(edge, token, tcp, data_conns=None, no_control=False, threads=2, ready=True,
              extra=()):
        o = tunnel.Origin(bindir, edge, token, tcp, procs.logdir, data_conns=data_conns,
                          no_control=no_control, threads=threads, extra=extra)
        procs.add(o.proc)
        if ready:
            o.wait_ready()
        return o

    return start
