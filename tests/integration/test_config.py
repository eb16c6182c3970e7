"""--config FILE and --print-config of both binaries: a file and the same flags give the same
settings, flags override the file, errors name the file and the line, and every JSON output
(the --print-config object, every --log-format json line of a real tunnel) parses."""
import json
import re
import subprocess

import pytest

from tunnel import LOCAL, EchoService, Proc, connect, free_port, free_ports, wait_until

TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
HEX32 = re.compile(r"[0-9a-f]{32}")


def run(argv, timeout=30):
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          timeout=timeout)


def printed(argv):
    """The --print-config object of argv: exit 0, exactly one line, a JSON object."""
    r = run(list(argv) + ["--print-config"])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1, r.stdout
    obj = json.loads(lines[0])
    assert isinstance(obj, dict), obj
    return obj


def as_flags(settings):
    out = []
    for k, v in settings:
        if v is True:
            out.append(f"--{k}")
        elif v is not False:
            out += [f"--{k}", str(v)]
    return out


def as_file(path, settings, header="# written by test_config.py\n"):
    lines = [f"{k} = {'true' if v is True else 'false' if v is False else v}"
             for k, v in settings]
    path.write_text(header + "\n".join(lines) + "\n")
    return path


def origin_settings(pin):
    return [
        ("edge", "127.0.0.1:7443"), ("token", "aaaa.bbbb.cccc"), ("pin", pin),
        ("http", "photos.example.com=http://127.0.0.1:3000"),
        ("http", "*.wiki.example.com=127.0.0.1:3001"),
        ("tcp", "20022=127.0.0.1:22"), ("tcp", "20023=[::1]:23"),
        ("proxy-protocol", True), ("data-conns", 3), ("no-control", False), ("insecure", False),
        ("threads", 2), ("log-format", "json"), ("log-level", "debug"),
        ("drain-timeout", "7s"), ("admin", "127.0.0.1:17071"), ("tcp-congestion", "cubic"),
    ]


def edge_settings(pki, token_key):
    return [
        ("tunnel", "127.0.0.1:17443"), ("http", "127.0.0.1:18080"), ("cert", pki.cert),
        ("key", pki.key), ("token-key", token_key), ("tcp-ports", "20000-20010"),
        ("tcp-bind", "127.0.0.1"), ("threads", 3), ("origin-timeout", "2m"),
        ("head-timeout", "5s"), ("keepalive", "9s"), ("log-format", "json"),
        ("log-level", "warn"), ("dev", False), ("dev-port", 4000),
        ("route-wait", "1500ms"), ("drain-timeout", "45s"), ("idle-timeout", "0"),
        ("max-tunnels", 7), ("max-streams", 70), ("max-client-conns", 0), ("rate-limit", 600),
        ("rate-burst", 20), ("admin", "127.0.0.1:17070"), ("max-frame", 8192),
        ("tcp-congestion", "system"),
    ]


def test_origin_file_and_flags_give_the_same_settings(bindir, tmp_path, pki):
    oc = [bindir / "originctl", "connect"]
    s = origin_settings(pki.pin)
    by_flags = printed(oc + as_flags(s))
    by_file = printed(oc + ["--config", as_file(tmp_path / "o.conf", s)])
    half = printed(oc + ["--config", as_file(tmp_path / "h.conf", s[:7])] + as_flags(s[7:]))
    assert by_flags == by_file == half
    assert by_file == {
        "edge": "127.0.0.1:7443", "token": "<set>", "ca": None, "pin": pki.pin,
        "insecure": False,
        "http": ["photos.example.com=http://127.0.0.1:3000",
                 "*.wiki.example.com=http://127.0.0.1:3001"],
        "tcp": ["20022=127.0.0.1:22", "20023=[::1]:23"], "proxy-protocol": True,
        "data-conns": 3, "no-control": False, "threads": 2, "log-format": "json",
        "log-level": "debug", "drain-timeout": "7000ms", "admin": "127.0.0.1:17071",
        "tcp-congestion": "cubic",
    }


def test_edge_file_and_flags_give_the_same_settings(bindir, tmp_path, pki, token_key):
    s = edge_settings(pki, token_key)
    by_flags = printed([bindir / "edged"] + as_flags(s))
    by_file = printed([bindir / "edged", "--config", as_file(tmp_path / "e.conf", s)])
    half = printed([bindir / "edged", "--config", as_file(tmp_path / "h.conf", s[::2])]
                   + as_flags(s[1::2]))
    assert by_flags == by_file == half
    assert by_file == {
        "tunnel": "127.0.0.1:17443", "http": "127.0.0.1:18080", "cert": str(pki.cert),
        "key": str(pki.key), "token-key": str(token_key), "tcp-ports": "20000-20010",
        "tcp-bind": "127.0.0.1", "threads": 3, "origin-timeout": "120s", "head-timeout": "5s",
        "keepalive": "9s", "log-format": "json", "log-level": "warn", "dev": False,
        "dev-port": 4000, "route-wait": "1500ms", "drain-timeout": "45000ms",
        "idle-timeout": "0ms", "max-tunnels": 7, "max-streams": 70, "max-client-conns": 0,
        "rate-limit": 600, "rate-burst": 20, "admin": "127.0.0.1:17070", "max-frame": 8192,
        "tcp-congestion": "system",
    }


def test_defaults_and_secrets(bindir, pki, token_key):
    e = printed([bindir / "edged", "--cert", pki.cert, "--key", pki.key,
                 "--token-key", token_key])
    assert e["tunnel"] == "127.0.0.1:7443" and e["http"] is None and e["tcp-ports"] == ""
    assert (e["origin-timeout"], e["head-timeout"], e["keepalive"]) == ("30s", "10s", "15s")
    assert (e["log-format"], e["log-level"]) == ("text", "info")
    assert e["tcp-congestion"] == "bbr"
    # --dev: loopback whatever was asked, and nothing made or printed but the settings
    d = printed([bindir / "edged", "--dev", "--tcp-bind", "0.0.0.0"])
    assert (d["dev"], d["http"], d["tcp-bind"], d["cert"]) == (True, "127.0.0.1:8080",
                                                               "127.0.0.1", None)
    token = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXNldHRpbmc.c2lnbmF0dXJl"
    r = run([bindir / "originctl", "connect", "--edge", "127.0.0.1:1", "--token", token,
             "--insecure", "--print-config"])
    assert r.returncode == 0, r.stderr
    o = json.loads(r.stdout)
    assert o["token"] == "<set>" and token not in r.stdout and "c2VjcmV0" not in r.stdout
    assert (o["data-conns"], o["no-control"], o["http"], o["tcp"]) == (4, False, [], [])


def test_flags_override_the_file_and_repeat_after_it(bindir, tmp_path):
    f = as_file(tmp_path / "o.conf", [
        ("edge", "127.0.0.1:1"), ("token", "t.t.t"), ("insecure", True), ("data-conns", 3),
        ("http", "a.example.com=127.0.0.1:1"), ("log-level", "debug")])
    o = printed([bindir / "originctl", "connect", "--config", f, "--data-conns", "5",
                 "--http", "b.example.com=127.0.0.1:2", "--log-level", "error",
                 "--edge", "127.0.0.1:2"])
    assert (o["data-conns"], o["log-level"], o["edge"]) == (5, "error", "127.0.0.1:2")
    assert o["http"] == ["a.example.com=http://127.0.0.1:1", "b.example.com=http://127.0.0.1:2"]
    assert o["insecure"] is True
    # --config anywhere on the line, abbreviated or joined, still goes first
    o2 = printed([bindir / "originctl", "connect", "--data-conns", "5", f"--conf={f}"])
    assert o2["data-conns"] == 5 and o2["edge"] == "127.0.0.1:1"


@pytest.mark.parametrize("text, line, message", [
    ("edge = 127.0.0.1:1\nbogus = 1\n", 2, "unknown key 'bogus'"),
    ("# c\n\nedge = 127.0.0.1:1\ndata-conns = 99\n", 4, "bad value '99'"),
    ("edge = 127.0.0.1:1\ntcp = 70000=127.0.0.1:22\n", 2, "bad value '70000=127.0.0.1:22'"),
    ("insecure = yes\n", 1, "insecure takes true or false, not 'yes'"),
    ("tcp-congestion = BBR\n", 1, "bad value 'BBR'"),
    ("tcp-congestion = " + "b" * 16 + "\n", 1, "bad value '" + "b" * 16 + "'"),
    ("edge\n", 1, "expected key = value"),
    ("[origin]\nedge = 127.0.0.1:1\n", 2, "sections are not used ([origin])"),
    ("config = /etc/other.conf\n", 1, "unknown key 'config'"),
    ("edge = 127.0.0.1:1\ntoken = " + "a" * 9000 + "\n", 2, "line longer than 8192 bytes"),
])
def test_config_errors_name_file_and_line(bindir, tmp_path, text, line, message):
    f = tmp_path / "bad.conf"
    f.write_text(text)
    r = run([bindir / "originctl", "connect", "--config", f, "--token", "t.t.t", "--insecure",
             "--print-config"])
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stdout == ""
    assert f"originctl: {f}:{line}: {message}" in r.stderr, r.stderr


def test_edge_config_errors(bindir, tmp_path, pki, token_key):
    f = tmp_path / "e.conf"
    f.write_text(f"cert = {pki.cert}\nkey = {pki.key}\ntoken-key = {token_key}\n"
                 "origin-timeout = soon\n")
    r = run([bindir / "edged", "--config", f, "--print-config"])
    assert r.returncode == 2 and f"edged: {f}:4: bad value 'soon'" in r.stderr, r.stderr
    # a bad value in the file is an error even when a flag would override it; on the command
    # line it names no file
    good = tmp_path / "good.conf"
    good.write_text("\n".join(f.read_text().splitlines()[:3]) + "\n")
    assert printed([bindir / "edged", "--config", good])["origin-timeout"] == "30s"
    r = run([bindir / "edged", "--config", good, "--origin-timeout", "later", "--print-config"])
    assert r.returncode == 2 and "edged: bad value 'later'" in r.stderr, r.stderr
    missing = tmp_path / "missing.conf"
    r = run([bindir / "edged", "--config", missing])
    assert r.returncode == 2
    assert f"edged: {missing}: No such file or directory" in r.stderr, r.stderr
    r = run([bindir / "edged", "--config", f, "--config", f])
    assert r.returncode == 2 and "--config given more than once" in r.stderr, r.stderr


def test_print_config_keys_are_documented_flags(bindir, pki, token_key):
    for argv, help_argv in (
            ([bindir / "edged", "--cert", pki.cert, "--key", pki.key, "--token-key", token_key],
             [bindir / "edged", "--help"]),
            ([bindir / "originctl", "connect", "--edge", "127.0.0.1:1", "--token", "t.t.t",
              "--insecure"], [bindir / "originctl", "--help"])):
        keys = set(printed(argv))
        documented = set(re.findall(r"--([a-z][a-z0-9-]*)", run(help_argv).stdout))
        assert keys <= documented, keys - documented


def _json_lines(proc):
    """Every stderr line of proc as a JSON object with ts, level and event."""
    out = []
    for line in proc.lines():
        obj = json.loads(line)  # any line that is not JSON fails here
        assert isinstance(obj, dict), line
        assert TS.fullmatch(obj.get("ts", "")), line
        assert obj.get("level") in ("debug", "info", "warn", "error"), line
        assert isinstance(obj.get("event"), str) and obj["event"], line
        assert list(obj)[:3] == ["ts", "level", "event"], line
        out.append(obj)
    return out


def _events(proc, name):
    evs = []
    for line in proc.lines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("event") == name:
            evs.append(obj)
    return evs


def test_tunnel_from_config_files_with_json_logs(bindir, tmp_path, pki, token_key, procs,
                                                 services):
    """A real edge and origin configured only by files, logging JSON: bytes cross, and every
    log line of both parses, with the session id on the lines about the session."""
    echo = services.add(EchoService())
    public, tunnel_port = free_ports(2)
    ef = as_file(tmp_path / "edged.conf", [
        ("tunnel", f"{LOCAL}:{tunnel_port}"), ("cert", pki.cert), ("key", pki.key),
        ("token-key", token_key), ("tcp-ports", f"{public}-{public}"), ("tcp-bind", LOCAL),
        ("threads", 2), ("log-format", "json"), ("log-level", "debug")])
    e = procs.add(Proc("edged", [bindir / "edged", "--config", ef], procs.logdir))
    e.wait_for(r'"event":"listening"')
    tok = run([bindir / "edged", "token", "--token-key", token_key, "--name", "cfgjson",
               "--tcp", public, "--ttl", "1h"])
    assert tok.returncode == 0, tok.stderr
    token = tok.stdout.strip().splitlines()[-1]
    of = as_file(tmp_path / "originctl.conf", [
        ("edge", f"{LOCAL}:{tunnel_port}"), ("token", token), ("pin", pki.pin),
        ("tcp", f"{public}={LOCAL}:{echo.port}"), ("data-conns", 2), ("threads", 2),
        ("log-format", "json"), ("log-level", "debug")])
    o = procs.add(Proc("originctl", [bindir / "originctl", "connect", "--config", of],
                       procs.logdir))
    ready = o.wait_for(r'"event":"ready"')
    assert ready
    (ev,) = _events(o, "ready")
    session = ev["session"].lower()
    assert HEX32.fullmatch(session), ev
    assert (ev["control"], ev["data"]) == (1, 2), ev
    wait_until(lambda: len([u for u in _events(e, "socket_up")
                            if str(u.get("session", "")).lower() == session]) == 3,
               30, "three socket_up lines at the edge")
    wait_until(lambda: _events(e, "tcp_listen"), 30, "tcp_listen at the edge")
    c = connect(public, timeout=30)
    c.sendall(b"through a tunnel set up by files\n")
    got = b""
    for _ in range(100):
        chunk = c.recv(4096)
        if not chunk:
            break
        got += chunk
        if got.endswith(b"\n"):
            break
    c.close()
    assert got == b"through a tunnel set up by files\n"

    assert o.stop() == 0 and e.stop() == 0
    for proc in (e, o):
        lines = _json_lines(proc)
        names = [x["event"] for x in lines]
        assert "stopping" in names and "stats" in names, names
    edge_lines = _json_lines(e)
    (up,) = [x for x in edge_lines if x["event"] == "session_up"]
    assert up["tunnel"] == "cfgjson" and up["session"].lower() == session, up
    ups = [x for x in edge_lines if x["event"] == "socket_up"]
    assert sorted(x["role"] for x in ups) == ["control", "data", "data"], ups
    assert all(x["session"].lower() == session for x in ups), ups
