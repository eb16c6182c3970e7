"""Keepalive (spec §9.2): a peer that stops answering is noticed by PING/PONG even though TCP
does not notice (the peer's kernel still acknowledges): SIGSTOP one side, the other closes its
sockets within three keepalive intervals; SIGCONT, and the tunnel comes back by itself."""
import os
import signal
import time

from tunnel import EchoService, echo_roundtrip


def test_stopped_edge_is_noticed_and_the_tunnel_comes_back(edge, origin, services):
    svc = services.add(EchoService())
    e = edge(ports=1, extra=["--keepalive", "3s"])  # PING every second, dead after three
    token = e.token("keepalive", tcp=e.ports)
    o = origin(e, token, {e.ports[0]: svc.port})
    assert echo_roundtrip(e.ports[0]) == b"ping-through-the-tunnel"

    os.kill(e.proc.pid, signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        o.proc.wait_event("keepalive_timeout", timeout=20)
        noticed = time.monotonic() - t0
    finally:
        os.kill(e.proc.pid, signal.SIGCONT)
    print(f"MEASURE keepalive_noticed_s={noticed:.2f}")
    assert noticed >= 2.0, f"declared dead after {noticed:.2f} s, before three 1 s intervals"

    # The origin redials what it closed (1 s backoff plus jitter) and is whole again: `ready`
    # once more. (A socket that heard from the edge less than three intervals before the stop
    # may survive, so not every socket is necessarily redialled.)
    o.proc.wait_event("ready", timeout=30, count=2)
    assert echo_roundtrip(e.ports[0]) == b"ping-through-the-tunnel"


def test_stopped_origin_is_noticed_by_the_edge(edge, origin, services):
    svc = services.add(EchoService())
    e = edge(ports=1, extra=["--keepalive", "3s"])
    token = e.token("keepalive2", tcp=e.ports)
    o = origin(e, token, {e.ports[0]: svc.port})
    os.kill(o.proc.pid, signal.SIGSTOP)
    try:
        e.proc.wait_event("keepalive_timeout", timeout=20)
        e.proc.wait_event("session_down", timeout=20)
    finally:
        os.kill(o.proc.pid, signal.SIGCONT)
