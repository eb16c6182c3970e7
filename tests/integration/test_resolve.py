"""The edge by name (`originctl connect --edge NAME:PORT`, PRODUCT.md's interface): the name is
looked up off the reactors (src/io/resolve.c), a dial that does not reach the edge asks for a
new lookup, and the redials go where the name points now, without a restart.

The name is real to the resolver and to nobody else: originctl runs in a private mount
namespace (`unshare --mount`, as root) whose /etc/hosts is a file of the test, bound over the
real one there only. unshare and sh exec originctl in the end, so the PID the test stops is
originctl's. The edge listens on 127.0.0.1 only; the name first gives another loopback
address nobody listens on, so a dial there is refused at once, then ::1 (where nobody listens
either) ahead of 127.0.0.1, so the dials must move on from the first address to the second.
"""
import os
import shutil
import signal
import subprocess

import pytest

import tunnel
from tunnel import EchoService, echo_roundtrip

NAME = "edge.test"


def _can_unshare():
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    r = subprocess.run(["unshare", "--mount", "true"], capture_output=True, timeout=10)
    return r.returncode == 0


def _by_name_setup(edge, services, tmp_path, name, hosts_text):
    """An echo service behind a one-port edge, its token, and the hosts file originctl will
    see (with `hosts_text`)."""
    if not _can_unshare():
        pytest.fail("this test needs root and unshare --mount (util-linux), as CI has")
    svc = services.add(EchoService())
    e = edge(ports=1)
    hosts = tmp_path / "hosts"
    hosts.write_text(hosts_text)
    return e, e.token(name, tcp=e.ports), {e.ports[0]: svc.port}, hosts


def _origin_by_name(bindir, procs, e, token, tcp, hosts, edge_addr=None, extra=()):
    wrap = ["unshare", "--mount", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"',
            str(hosts)]
    if edge_addr is None:
        edge_addr = f"{NAME}:{e.tunnel_port}"
    o = tunnel.Origin(bindir, e, token, tcp, procs.logdir, edge_addr=edge_addr, wrap=wrap,
                      extra=extra)
    procs.add(o.proc)
    return o


def test_edge_by_name_follows_the_name(bindir, procs, edge, services, tmp_path):
    # Nobody listens on 127.0.0.9.
    e, token, tcp, hosts = _by_name_setup(edge, services, tmp_path, "byname",
                                          f"127.0.0.9 {NAME}\n")
    o = _origin_by_name(bindir, procs, e, token, tcp, hosts)

    # The start looked the name up (in main, before the reactors dial) and the dials to the
    # address it gave are refused.
    ev = o.proc.wait_event("resolved", host=NAME)[0]
    assert ev["addrs"] == f"127.0.0.9:{e.tunnel_port}", ev
    o.proc.wait_event("redial", timeout=10)
    assert not e.proc.events("socket_up")

    # The name moves (same inode: the bind mount sees it), to two addresses: ::1 first
    # (getaddrinfo's order, RFC 6724: IPv6 loopback before IPv4), where nobody listens either,
    # then the edge's. A failed dial asked for a new lookup; the dials to ::1 are refused and
    # move the next ones on to 127.0.0.1, which answers: no restart.
    new = f"::1 {NAME}\n127.0.0.1 {NAME}\n"
    assert len(new) > len(hosts.read_text())
    with open(hosts, "r+") as f:  # overwritten in place, never seen empty (no truncation)
        f.write(new)
    o.wait_ready(timeout=60)
    evs = o.proc.wait_event("resolved", host=NAME, count=2, timeout=10)
    port = e.tunnel_port
    assert evs[1]["addrs"] == f"[::1]:{port},127.0.0.1:{port}", (
        "getaddrinfo did not put ::1 first (no IPv6 loopback, or an /etc/gai.conf?): "
        "the test cannot make the dials move on", evs)
    assert echo_roundtrip(e.ports[0]) == b"ping-through-the-tunnel", "dialled by name"
    assert o.proc.alive()


def test_reload_from_an_address_to_a_name(bindir, procs, edge, services, tmp_path):
    """SIGHUP with a config file whose edge changed from an address to a name: the name is
    looked up (an address never was) and the new generation dials it and gets ready."""
    e, token, tcp, hosts = _by_name_setup(edge, services, tmp_path, "reload-name",
                                          f"127.0.0.1 {NAME}\n")
    conf = tmp_path / "originctl.conf"
    conf.write_text(f"edge = {e.addr}\n")
    o = _origin_by_name(bindir, procs, e, token, tcp, hosts, edge_addr="",
                        extra=("--config", conf))
    o.wait_ready()
    assert not o.proc.events("resolved"), "an address needs no lookup"
    conf.write_text(f"edge = {NAME}:{e.tunnel_port}\n")
    os.kill(o.proc.pid, signal.SIGHUP)
    o.proc.wait_event("reloaded", 10, generation=2)
    ev = o.proc.wait_event("resolved", 10, host=NAME)[0]
    assert ev["addrs"] == f"127.0.0.1:{e.tunnel_port}", ev
    o.proc.wait_event("ready", 20, generation=2)
    assert echo_roundtrip(e.ports[0]) == b"ping-through-the-tunnel", "after the reload"
    assert o.proc.alive()


@pytest.mark.parametrize("bad", ["edge test:7000", "edge.test:0", "edge.test:65536",
                                 "edge.test:", ":7000", "edge.test:70x", "[::1:7000",
                                 "a" * 254 + ":7000", "[edge.test]:7000", "300.1.1.1:7000",
                                 "-edge.test:7000",
                                 # a good name, 256 characters with the port: cut to fit, it
                                 # would still parse, with port 6553
                                 ("a" * 61 + ".") * 4 + "bb:65535"])
def test_bad_edge_address_is_refused_at_start(bindir, bad):
    r = subprocess.run([str(bindir / "originctl"), "connect", "--edge", bad, "--token", "t",
                        "--insecure"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, (bad, r.returncode, r.stderr)
    assert "bad value" in r.stderr, r.stderr


def test_good_edge_addresses_parse(bindir):
    """Names, literals and bracketed IPv6 pass the syntax check (--print-config opens
    nothing and looks nothing up)."""
    for good in ["edge.example.com:7443", "edge-1.internal:1", "localhost:65535",
                 "127.0.0.1:7443", "[::1]:7443", "my_host:80"]:
        r = subprocess.run([str(bindir / "originctl"), "connect", "--edge", good, "--token",
                            "t", "--insecure", "--print-config"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, (good, r.stderr)
        assert f'"edge": "{good}"' in r.stdout or f'"edge":"{good}"' in r.stdout, r.stdout
