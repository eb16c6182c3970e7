"""Helpers for the admin API tests (test_admin.py): a strict parser of the Prometheus text
format, admin requests on raw sockets and with http.client, and edged with --admin.

The parser is deliberately narrower than what Prometheus accepts, so a sloppy exposition
fails: every family needs a TYPE line before its samples, HELP and TYPE at most once,
counter samples end in _total, label syntax exactly name="value" with only \\\\ \\" \\n
escapes, no duplicate series, and histogram buckets sorted by le, cumulative, ending in
le="+Inf" equal to _count.
"""
import http.client
import json
import math
import re
import socket
import time

from tunnel import LOCAL, free_port

NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
VALUE_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]Inf|NaN")
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")
HIST_SUFFIXES = ("_bucket", "_sum", "_count")


def _parse_labels(text, line):
    """{name: value} of a label set '{a="x",b="y"}' (or None / '' for none)."""
    if not text:
        return {}
    assert text[0] == "{" and text[-1] == "}", line
    inner = text[1:-1]
    out = {}
    pos = 0
    for _ in range(1000):
        if pos == len(inner):
            break
        m = LABEL_RE.match(inner, pos)
        assert m, f"bad label syntax at {inner[pos:]!r} in {line!r}"
        name, value = m.group(1), m.group(2)
        assert not name.startswith("__"), f"reserved label name in {line!r}"
        assert name not in out, f"duplicate label {name} in {line!r}"
        out[name] = re.sub(r"\\(.)", lambda g: "\n" if g.group(1) == "n" else g.group(1), value)
        pos = m.end()
        if pos < len(inner):
            assert inner[pos] == ",", f"labels not separated by ',' in {line!r}"
            pos += 1
            assert pos < len(inner), f"trailing ',' in {line!r}"
    return out


class Metrics:
    """A parsed exposition: families {name: {"type", "help"}} and samples
    {(sample name, frozenset(labels.items())): value}."""

    def __init__(self, families, samples):
        self.families = families
        self.samples = samples

    def value(self, name, **labels):
        key = (name, frozenset((k, str(v)) for k, v in labels.items()))
        assert key in self.samples, f"no sample {name}{labels}; have " + ", ".join(
            sorted({n for n, _ in self.samples}))
        return self.samples[key]

    def series(self, name):
        return {lab: v for (n, lab), v in self.samples.items() if n == name}


def parse_prometheus(text):
    assert text.endswith("\n"), "the exposition must end with a newline"
    families = {}
    samples = {}
    order = []
    for line in text[:-1].split("\n"):
        assert line, "empty line in the exposition"
        if line.startswith("#"):
            m = re.fullmatch(r"# (HELP|TYPE) (\S+) (.+)", line)
            assert m, f"bad comment line {line!r}"
            kind, name, rest = m.groups()
            assert NAME_RE.fullmatch(name), f"bad metric name {name!r}"
            fam = families.setdefault(name, {"samples": 0})
            if kind == "HELP":
                assert "help" not in fam, f"second HELP for {name}"
                fam["help"] = rest
            else:
                assert "type" not in fam, f"second TYPE for {name}"
                assert rest in TYPES, f"bad type {rest!r} for {name}"
                assert fam["samples"] == 0, f"TYPE for {name} after its samples"
                fam["type"] = rest
                order.append(name)
            continue
        m = re.fullmatch(r"([^{\s]+)(\{.*\})? (\S+)", line)
        assert m, f"bad sample line {line!r}"
        name, labtext, val = m.groups()
        assert NAME_RE.fullmatch(name), f"bad metric name {name!r}"
        assert VALUE_RE.fullmatch(val), f"bad value {val!r} in {line!r}"
        labels = _parse_labels(labtext, line)
        family = name if name in families else None
        if family is None:
            for suf in HIST_SUFFIXES:
                base = name[: -len(suf)]
                if name.endswith(suf) and families.get(base, {}).get("type") == "histogram":
                    family = base
        assert family is not None and "type" in families[family], \
            f"sample {name} without a TYPE line before it"
        ftype = families[family]["type"]
        if ftype == "counter":
            assert name.endswith("_total"), f"counter {name} does not end in _total"
        if ftype == "histogram":
            assert name != family, f"bare sample {name} of histogram"
            if name.endswith("_bucket"):
                assert "le" in labels, f"bucket without le: {line!r}"
        else:
            assert "le" not in labels or ftype == "summary", line
        assert order and order[-1] == family, f"samples of {family} not grouped"
        families[family]["samples"] += 1
        key = (name, frozenset(labels.items()))
        assert key not in samples, f"duplicate series {line!r}"
        v = float(val)
        if ftype == "counter":
            assert v >= 0 and not math.isnan(v), f"negative counter {line!r}"
        samples[key] = v
    for name, fam in families.items():
        assert "type" in fam, f"HELP without TYPE for {name}"
        assert fam["samples"] > 0, f"family {name} has no samples"
        if fam["type"] == "histogram":
            _check_histogram(name, samples)
    return Metrics(families, samples)


def _check_histogram(name, samples):
    groups = {}
    for (n, lab), v in samples.items():
        if n == name + "_bucket":
            d = dict(lab)
            le = d.pop("le")
            groups.setdefault(frozenset(d.items()), []).append((le, v))
    assert groups, f"histogram {name} has no buckets"
    for rest, buckets in groups.items():
        bounds = [float("inf") if le == "+Inf" else float(le) for le, _ in buckets]
        assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds), \
            f"{name} buckets not in ascending le order: {buckets}"
        assert buckets[-1][0] == "+Inf", f"{name} has no le=\"+Inf\" bucket"
        counts = [v for _, v in buckets]
        assert all(a <= b for a, b in zip(counts, counts[1:])), \
            f"{name} buckets not cumulative: {buckets}"
        count = samples.get((name + "_count", rest))
        assert count is not None and (name + "_sum", rest) in samples, f"{name} lacks _sum/_count"
        assert counts[-1] == count, f"{name}: +Inf bucket {counts[-1]} != _count {count}"


# ---------------------------------------------------------------------------------------------
# Requests


def admin_get(port, path, method="GET", body=None, headers=None, timeout=30.0):
    """(status, {lower-case header: value}, body bytes) with http.client."""
    c = http.client.HTTPConnection(LOCAL, port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def admin_json(port, path, status=200, **kw):
    st, hdrs, body = admin_get(port, path, **kw)
    assert st == status, (path, st, body[:300])
    assert hdrs.get("content-type") == "application/json", hdrs
    return json.loads(body)


def metrics(port):
    st, hdrs, body = admin_get(port, "/metrics")
    assert st == 200, (st, body[:200])
    assert hdrs.get("content-type", "").startswith("text/plain; version=0.0.4"), hdrs
    return parse_prometheus(body.decode("utf-8"))


def raw_exchange(port, data, timeout=20.0, shut_wr=False):
    """Send raw bytes, read until the server closes (bounded): (status or None, bytes)."""
    s = socket.create_connection((LOCAL, port), timeout=timeout)
    try:
        if data:
            s.sendall(data)
        if shut_wr:
            s.shutdown(socket.SHUT_WR)
        buf = b""
        deadline = time.monotonic() + timeout
        for _ in range(10_000):
            left = deadline - time.monotonic()
            assert left > 0, f"no close within {timeout} s; got {buf[:200]!r}"
            s.settimeout(left)
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            buf += chunk
        m = re.match(rb"HTTP/1\.1 (\d{3}) ", buf)
        return (int(m.group(1)) if m else None), buf
    finally:
        s.close()


def with_admin(start, *args, extra=(), **kw):
    """Start something (edge fixture, start_http_edge, …) with --admin on a free port; retried
    when the port was taken meanwhile. Returns (thing, admin port)."""
    last = None
    for _ in range(3):
        port = free_port()
        try:
            thing = start(*args, extra=["--admin", f"{LOCAL}:{port}", *extra], **kw)
        except AssertionError as exc:
            last = exc
            if not re.search(r"in use|EADDRINUSE", str(exc), re.I):
                raise
            continue
        proc = thing.proc
        proc.wait_event("admin_listening", addr=f"{LOCAL}:{port}")
        return thing, port
    raise last
