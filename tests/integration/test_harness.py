"""The test harness itself (tunnel.py), without the binaries: certificate and pin, token key and
tokens, the deterministic streams, the local services and clients over direct sockets, and the
process wrapper. If these fail, the tunnel tests' verdicts mean nothing."""
import hashlib
import hmac
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest

import tunnel
from tunnel import GiB, KiB, MiB


def _der_children(der, offset, end):
    """(tag, element start, value start, value end) of each DER element in der[offset:end]."""
    out = []
    for _ in range(64):
        if offset >= end:
            return out
        start, tag, length = offset, der[offset], der[offset + 1]
        offset += 2
        if length & 0x80:
            n = length & 0x7F
            length = int.from_bytes(der[offset:offset + n], "big")
            offset += n
        out.append((tag, start, offset, offset + length))
        offset += length
    raise AssertionError("too many DER elements")


def _spki_of(cert_der):
    """The DER SubjectPublicKeyInfo of an X.509 certificate (tbsCertificate field 7)."""
    (_, _, c0, c1), = _der_children(cert_der, 0, len(cert_der))
    (_, _, t0, t1) = _der_children(cert_der, c0, c1)[0]
    fields = _der_children(cert_der, t0, t1)
    if fields[0][0] == 0xA0:  # [0] version
        fields = fields[1:]
    tag, start, _, end = fields[5]  # serial, signature, issuer, validity, subject, spki
    assert tag == 0x30
    return cert_der[start:end]


def test_pki_pin_is_the_sha256_of_the_spki_a_tls_client_sees(pki):
    text = subprocess.run(["openssl", "x509", "-in", str(pki.cert), "-noout", "-text"],
                          capture_output=True, text=True, check=True).stdout
    assert "prime256v1" in text or "P-256" in text
    assert "CN = localhost" in text
    assert "DNS:localhost" in text and "IP Address:127.0.0.1" in text

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(pki.cert, pki.key)
    ctx.set_alpn_protocols(["edgetunnel/1"])
    ls = socket.create_server((tunnel.LOCAL, 0))
    port = ls.getsockname()[1]
    done = threading.Event()

    def serve():
        try:
            ls.settimeout(10)
            c, _ = ls.accept()
            with ctx.wrap_socket(c, server_side=True) as s:
                s.settimeout(10)
                s.recv(1)
        except OSError:
            pass
        finally:
            done.set()

    threading.Thread(target=serve, daemon=True).start()
    cctx = ssl.create_default_context(cafile=str(pki.cert))  # verifies CN/SAN 127.0.0.1
    cctx.set_alpn_protocols(["edgetunnel/1"])
    with socket.create_connection((tunnel.LOCAL, port), timeout=10) as raw:
        with cctx.wrap_socket(raw, server_hostname=tunnel.LOCAL) as s:
            assert s.version() == "TLSv1.3"
            assert s.selected_alpn_protocol() == "edgetunnel/1"
            der = s.getpeercert(binary_form=True)
            s.sendall(b"x")
    done.wait(10)
    ls.close()
    assert pki.pin == "sha256:" + hashlib.sha256(_spki_of(der)).hexdigest()


def test_token_key_and_minted_tokens(tmp_path):
    key = tunnel.make_token_key(tmp_path / "k")
    raw = key.read_bytes()
    assert raw.endswith(b"\n") and len(tunnel.token_key_bytes(key)) == 44  # base64 of 32 bytes
    tok = tunnel.mint_token(key, "n", tcp=[20001], iat=100, exp=200)
    header, claims, signing_input, mac = tunnel.decode_token(tok)
    assert header == {"alg": "HS256", "typ": "JWT"}
    assert claims == {"exp": 200, "hosts": [], "iat": 100, "sub": "n", "tcp": [20001]}
    assert "=" not in tok
    assert mac == hmac.new(raw[:-1], signing_input, hashlib.sha256).digest()


def test_pattern_streams_are_deterministic_and_distinct():
    a = tunnel.pattern_prefix(1, 2 * MiB + 5)
    assert len(a) == 2 * MiB + 5
    assert a == tunnel.pattern_prefix(1, 2 * MiB + 5)
    assert a[:MiB] != a[MiB:2 * MiB]
    assert a[:100] != tunnel.pattern_prefix(2, 100)
    assert tunnel.pattern_digest(1, 2 * MiB + 5) == hashlib.sha256(a).hexdigest()


def test_parse_kv():
    f = tunnel.parse_kv('ts=2024-01-01T00:00:00Z level=info event=refused reason=auth_scope '
                        'text="a b \\"c\\"" empty= n=3')
    assert f == {"ts": "2024-01-01T00:00:00Z", "level": "info", "event": "refused",
                 "reason": "auth_scope", "text": 'a b "c"', "empty": "", "n": "3"}


def test_source_sink_echo_direct(services):
    src = services.add(tunnel.SourceService(3 * MiB + 7, seed=5))
    c = tunnel.connect(src.port)
    r = tunnel.read_stream(c, time.monotonic() + 30, limit=4 * MiB)
    c.close()
    (rec,) = src.wait_conns(1)
    tunnel.wait_until(lambda: rec.done_ns, 10, "source done")
    assert r.eof and r.error is None and r.count == rec.sent == 3 * MiB + 7
    assert r.digest == rec.digest == tunnel.pattern_digest(5, 3 * MiB + 7)

    sink = services.add(tunnel.SinkService(reply=b"ok"))
    c = tunnel.connect(sink.port)
    d = tunnel.send_pattern(c, 6, 2 * MiB, time.monotonic() + 30)
    c.shutdown(socket.SHUT_WR)
    keep = bytearray()
    r = tunnel.read_stream(c, time.monotonic() + 30, limit=10, keep=keep)
    c.close()
    (rec,) = sink.wait_conns(1)
    tunnel.wait_until(lambda: rec.done_ns, 10, "sink done")
    assert (rec.received, rec.digest, bytes(keep), r.eof) == (2 * MiB, d, b"ok", True)

    echo = services.add(tunnel.EchoService())
    c = tunnel.connect(echo.port)
    c.sendall(b"x" * 100 * KiB)
    c.shutdown(socket.SHUT_WR)
    keep = bytearray()
    r = tunnel.read_stream(c, time.monotonic() + 30, limit=100 * KiB, keep=keep)
    c.close()
    assert r.eof and bytes(keep) == b"x" * 100 * KiB


def test_abort_is_seen_by_the_source_as_a_reset(services):
    src = services.add(tunnel.SourceService(4 * GiB, seed=9))
    c = tunnel.connect(src.port)
    r = tunnel.read_stream(c, time.monotonic() + 30, limit=MiB, upto=MiB)
    assert r.digest == tunnel.pattern_digest(9, MiB)
    (rec,) = src.wait_conns(1)
    t0 = tunnel.now_ns()
    tunnel.abort(c)
    tunnel.wait_until(lambda: rec.error, 5, "the reset")
    assert rec.error in ("ECONNRESET", "EPIPE")
    tunnel.measure(direct_reset_ms=(rec.error_ns - t0) / 1e6)


def test_source_reset_after_reaches_the_client(services):
    src = services.add(tunnel.SourceService(64 * MiB, seed=3, reset_after=2 * MiB))
    c = tunnel.connect(src.port)
    keep = bytearray()
    r = tunnel.read_stream(c, time.monotonic() + 30, limit=2 * MiB, keep=keep)
    c.close()
    (rec,) = src.wait_conns(1)
    assert rec.reset_ns is not None and rec.sent == 2 * MiB
    assert r.error == "ECONNRESET" or r.eof
    assert bytes(keep) == tunnel.pattern_prefix(3, len(keep))


def test_services_stop_with_blocked_handlers():
    src = tunnel.SourceService(4 * GiB, seed=1)
    c = tunnel.connect(src.port)  # never read: the handler blocks in send
    src.wait_conns(1)
    time.sleep(0.2)
    t0 = time.monotonic()
    assert src.stop()
    assert time.monotonic() - t0 < 5
    c.close()


CHILD = r"""
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN if sys.argv[1] == "stubborn" else
              lambda *a: (print("ts=1 level=info event=stats a=1 b=2", file=sys.stderr,
                                flush=True), sys.exit(0)))
print("ts=1 level=info event=listening tunnel=127.0.0.1:1 note=\"x y\"", file=sys.stderr,
      flush=True)
if sys.argv[1] == "quit":
    sys.exit(3)
for _ in range(600):
    time.sleep(0.1)
"""


@pytest.mark.parametrize("kind", ["polite", "stubborn", "quit"])
def test_proc_wrapper(kind, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    p = tunnel.Proc("child", [sys.executable, script, kind], tmp_path)
    (ev,) = p.wait_event("listening", 10, tunnel="127.0.0.1:1")
    assert ev["note"] == "x y"
    if kind == "quit":
        assert p.wait_exit(10) == 3
        with pytest.raises(AssertionError, match="exited"):
            p.wait_event("ready", 10)
        return
    with pytest.raises(AssertionError, match="no 1x event=ready"):
        p.wait_event("ready", 0.3)
    t0 = time.monotonic()
    rc = p.stop(grace=1)
    if kind == "polite":
        assert rc == 0 and p.stats() == {"ts": "1", "level": "info", "event": "stats",
                                         "a": "1", "b": "2"}
    else:
        assert rc == -9 and time.monotonic() - t0 >= 1
