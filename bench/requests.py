#!/usr/bin/env python3
"""requests.py: small HTTP requests through the tunnel, `ssh -R` and direct (issue #5).

    bench/requests.py [--build build/gcc] [--duration 6] [--runs 3] [--connections 64]
                      [--wrk-threads 2] [--paths tunnel,ssh,direct] [--no-bulk] [--data-conns N]

The origin is nginx (Debian's), started here with its own config and prefix in a temp dir,
listening on 127.0.0.1 only, one worker, access log off, stopped by its master's PID (never
the system service). It serves /small (a 1 KiB file) and /big (a sparse 64 GiB file, read as
zeros from the page cache: the bulk download).

Paths to it:
- tunnel: edged --http 127.0.0.1:P and originctl --http HOST=http://127.0.0.1:NGINX; wrk and
  curl send `Host: HOST` (the edge routes by it).
- ssh: `ssh -R` through a private sshd on 127.0.0.1 (bench/sshpeer.py's SshTunnel,
  aes128-gcm@openssh.com).
- direct: straight to nginx (the floor).

For each path and run: `wrk -tT -cC -dDs --latency` (keep-alive, C connections) on /small,
alone (`load: none`), then the same beside one bulk download of /big by curl through the same
path, as fast as it goes (`load: bulk`: on 2 cores this also takes CPU from everything else,
which `direct` beside the same download shows) and held to 100 MiB/s (`load: bulk100M`, curl
--limit-rate: a big transfer in the tunnel without starving the machine). curl starts 1 s
before wrk and runs until wrk is done. Each line: requests/s,
p50/p90/p99 latency (wrk's --latency distribution), socket errors and non-2xx answers (a run
with any is `ok: false`), the bulk download's MB/s, and the CPU seconds of the tunnel's two
processes (edged + originctl, or sshd session + ssh client) per 100,000 requests. Runs
alternate between paths, so drift on a shared machine hits each path alike. Then
`requests_summary` (medians over the runs per path and load) and `requests_target` (the issue's
targets checked against those medians: requests/s >= 2.5x ssh -R and > 27,000; p99 <= 5.5 ms;
p99 with a bulk download beside it <= 2x without, with direct's own ratio beside it).

Everything runs on 127.0.0.1, every process is stopped by PID, every wait is bounded.
"""
import argparse
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import core  # noqa: E402  (emit, cpu_seconds; puts tests/integration on sys.path)
import sshpeer  # noqa: E402  (SshTunnel, stop_pid, cpu_or_zero)
import tunnel as T  # noqa: E402

emit = core.emit
NGINX = "/usr/sbin/nginx"
WRK = "/usr/bin/wrk"
CURL = "/usr/bin/curl"
HOST = "bench.example.test"
SMALL = 1024
BIG = 64 << 30
RATHOLE_RPS = 27000  # the figure for rathole
TARGET_VS_SSH = 2.5
TARGET_P99_MS = 5.5
TARGET_BULK_P99_RATIO = 2.0
# load name -> curl --limit-rate of the bulk download beside wrk (None: as fast as it goes)
BULK_LOADS = {"bulk": None, "bulk100M": "100M"}
BULK_LEAD = 1.0


def log(msg):
    print(f"requests.py: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# nginx


class Nginx:
    """nginx -p PREFIX -c PREFIX/nginx.conf -g 'daemon off;' on 127.0.0.1:port."""

    def __init__(self, tmp):
        self.dir = tmp / "nginx"
        (self.dir / "html").mkdir(parents=True)
        (self.dir / "logs").mkdir()
        (self.dir / "tmp").mkdir()
        (self.dir / "html" / "small").write_bytes(b"s" * SMALL)
        with open(self.dir / "html" / "big", "wb") as f:
            f.truncate(BIG)  # sparse: zeros, no disk
        (self.port,) = T.free_ports(1)
        user = "user nobody nogroup;" if os.geteuid() == 0 else ""
        for p in [tmp, self.dir, self.dir / "html"] + list((self.dir / "html").iterdir()):
            os.chmod(p, 0o755)  # workers run as nobody when we are root
        t = self.dir / "tmp"
        conf = f"""
{user}
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.dir}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {t}/body;
    proxy_temp_path {t}/proxy;
    fastcgi_temp_path {t}/fastcgi;
    uwsgi_temp_path {t}/uwsgi;
    scgi_temp_path {t}/scgi;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    server {{
        listen 127.0.0.1:{self.port} reuseport backlog=4096;
        server_name _;
        root {self.dir}/html;
    }}
}}
"""
        (self.dir / "nginx.conf").write_text(conf)
        self.errlog = open(self.dir / "stderr", "wb")
        self.proc = subprocess.Popen([NGINX, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"),
                                      "-g", "daemon off;"], stdin=subprocess.DEVNULL,
                                     stdout=self.errlog, stderr=subprocess.STDOUT)
        try:
            T.wait_until(lambda: sshpeer.listening(self.port) or self.proc.poll() is not None,
                         15, "nginx listening")
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited {self.proc.returncode}: "
                                   f"{(self.dir / 'stderr').read_text(errors='replace')[-2000:]}")
        except BaseException:
            self.stop()
            raise

    def stop(self):
        # SIGTERM to the master (fast shutdown: it stops its workers), then SIGKILL.
        sshpeer.stop_pid(self.proc)
        self.errlog.close()


# ---------------------------------------------------------------------------------------------
# paths


class TunnelPath:
    name = "tunnel"

    def __init__(self, build, tmp, origin_port, threads, data_conns=None):
        self.pki = T.Pki(tmp / "pki")
        self.key = T.make_token_key(tmp / "token.key")
        self.origin = None
        self.edge = None
        for attempt in range(3):  # the HTTP port may be taken between pick and bind
            (self.port,) = T.free_ports(1)
            try:
                self.edge = T.Edge(build, self.pki, self.key, tmp / "logs", ports=1,
                                   threads=threads,
                                   extra=["--http", f"127.0.0.1:{self.port}"])
                break
            except AssertionError:
                if attempt == 2:
                    raise
        try:
            tok = self.edge.token("bench", hosts=[HOST])
            self.origin = T.Origin(build, self.edge, tok, {}, tmp / "logs", threads=threads,
                                   data_conns=data_conns, extra=["--http", f"{HOST}=http://127.0.0.1:{origin_port}"])
            self.origin.wait_ready()
            self.edge.proc.wait_event("http_route", host=HOST)
        except BaseException:
            self.stop()
            raise
        self.host = HOST

    def pids(self):
        return [self.edge.proc.pid, self.origin.proc.pid]

    def stop(self):
        if self.origin is not None:
            self.origin.proc.stop()
        if self.edge is not None:
            self.edge.proc.stop()


class SshPath:
    name = "ssh"

    def __init__(self, origin_port):
        (self.port,) = T.free_ports(1)
        self.t = sshpeer.SshTunnel(self.port, origin_port).__enter__()
        self.host = None

    def pids(self):
        return [self.t.session_pid, self.t.ssh_pid]

    def stop(self):
        self.t.close()


class DirectPath:
    name = "direct"

    def __init__(self, origin_port):
        self.port = origin_port
        self.host = None

    def pids(self):
        return []

    def stop(self):
        pass


# ---------------------------------------------------------------------------------------------
# measuring

_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"wrk latency {text!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


def parse_wrk(out):
    """requests/s, latency percentiles (ms), socket errors and non-2xx/3xx from wrk's output."""
    r = {}
    m = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    r["rps"] = float(m.group(1)) if m else None
    m = re.search(r"^\s+(\d+) requests in ([\d.]+)(\w+),", out, re.M)
    r["requests"] = int(m.group(1)) if m else None
    for p in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{p}%\s+(\S+)", out, re.M)
        r[f"p{p}_ms"] = round(_ms(m.group(1)), 3) if m else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non_2xx"] = int(m.group(1)) if m else 0
    return r


def check_path(path):
    """One GET /small through the path must give 200 and the file (else the bench is void)."""
    argv = [CURL, "-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10"]
    if path.host:
        argv += ["-H", f"Host: {path.host}"]
    argv.append(f"http://127.0.0.1:{path.port}/small")
    r = subprocess.run(argv, capture_output=True, timeout=20)
    body, _, code = r.stdout.rpartition(b"\n")
    if code != b"200" or body != b"s" * SMALL:
        raise RuntimeError(f"{path.name}: GET /small gave {code!r}, {len(body)} bytes; "
                           f"curl exit {r.returncode} {r.stderr[-300:]!r}")


def start_bulk(path, seconds, rate):
    argv = [CURL, "-s", "-o", "/dev/null", "-w", "%{size_download} %{time_total} %{http_code}",
            "--max-time", f"{seconds:.1f}"]
    if rate:
        argv += ["--limit-rate", rate]
    if path.host:
        argv += ["-H", f"Host: {path.host}"]
    argv.append(f"http://127.0.0.1:{path.port}/big")
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)


def finish_bulk(p, timeout):
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        sshpeer.stop_pid(p)
        out, _ = p.communicate(timeout=5)
    f = out.split()
    if len(f) != 3:
        return {"bulk_ok": False}
    size, secs, code = int(f[0]), float(f[1]), f[2]
    # curl exits 28 at --max-time: that is the planned end of an endless download
    return {"bulk_ok": code == "200" and p.returncode in (0, 28) and size > 0,
            "bulk_mb_per_s": round(size / max(secs, 1e-6) / 1e6, 1)}


def run_wrk(path, a, load, run):
    cpu0 = sum(sshpeer.cpu_or_zero(p) for p in path.pids())
    bulk = None
    if load != "none":
        # curl ends itself (--max-time) just after wrk: 1 s head start, wrk's run, 0.5 s slack
        bulk = start_bulk(path, BULK_LEAD + a.duration + 0.5, BULK_LOADS[load])
        time.sleep(BULK_LEAD)  # the download is at full speed before wrk starts
    argv = [WRK, f"-t{a.wrk_threads}", f"-c{a.connections}", f"-d{a.duration}s", "--latency",
            "--timeout", "5s"]
    if path.host:
        argv += ["-H", f"Host: {path.host}"]
    argv.append(f"http://127.0.0.1:{path.port}/small")
    try:
        w = subprocess.run(argv, capture_output=True, text=True, timeout=a.duration + 30)
    finally:
        extra = finish_bulk(bulk, a.duration + 10) if bulk is not None else {}
    cpu = sum(sshpeer.cpu_or_zero(p) for p in path.pids()) - cpu0
    r = parse_wrk(w.stdout)
    ok = (w.returncode == 0 and r["rps"] is not None and r["p99_ms"] is not None
          and r["socket_errors"] == 0 and r["non_2xx"] == 0 and extra.get("bulk_ok", True))
    line = dict(bench="requests", path=path.name, load=load, run=run, ok=ok,
                connections=a.connections, wrk_threads=a.wrk_threads, seconds=a.duration,
                rps=r["rps"], requests=r["requests"], p50_ms=r["p50_ms"], p90_ms=r["p90_ms"],
                p99_ms=r["p99_ms"], socket_errors=r["socket_errors"], non_2xx=r["non_2xx"],
                **extra)
    if path.pids() and r["requests"]:
        line["tunnel_cpu_s_per_100k_req"] = round(cpu / r["requests"] * 1e5, 3)
    if not ok:
        line["wrk_stdout"] = w.stdout[-600:]
        line["wrk_stderr"] = w.stderr[-300:]
    emit(**line)
    return line


def summarize(lines, a):
    summ = {}
    for key in sorted({(x["path"], x["load"]) for x in lines}):
        xs = [x for x in lines if (x["path"], x["load"]) == key and x["ok"]]
        if not xs:
            continue
        s = dict(bench="requests_summary", path=key[0], load=key[1], runs=len(xs),
                 rps_median=round(statistics.median(x["rps"] for x in xs), 1),
                 rps_runs=[x["rps"] for x in xs],
                 p50_ms_median=round(statistics.median(x["p50_ms"] for x in xs), 3),
                 p99_ms_median=round(statistics.median(x["p99_ms"] for x in xs), 3),
                 p99_ms_runs=[x["p99_ms"] for x in xs])
        if key[1] != "none":
            s["bulk_mb_per_s_median"] = round(statistics.median(x["bulk_mb_per_s"] for x in xs), 1)
        cpus = [x["tunnel_cpu_s_per_100k_req"] for x in xs if "tunnel_cpu_s_per_100k_req" in x]
        if cpus:
            s["tunnel_cpu_s_per_100k_req_median"] = round(statistics.median(cpus), 3)
        summ[key] = s
        emit(**s)
    t = summ.get(("tunnel", "none"))
    if t is None:
        return
    tgt = dict(bench="requests_target", rps=t["rps_median"], p99_ms=t["p99_ms_median"],
               rps_over_rathole=round(t["rps_median"] / RATHOLE_RPS, 2),
               rps_ok=t["rps_median"] > RATHOLE_RPS, p99_ok=t["p99_ms_median"] <= TARGET_P99_MS)
    ssh = summ.get(("ssh", "none"))
    if ssh is not None:
        tgt["rps_over_ssh"] = round(t["rps_median"] / ssh["rps_median"], 2)
        tgt["rps_over_ssh_ok"] = tgt["rps_over_ssh"] >= TARGET_VS_SSH
    d = summ.get(("direct", "none"))
    if d is not None:
        tgt["rps_over_direct"] = round(t["rps_median"] / d["rps_median"], 2)
    for load in BULK_LOADS:
        tb = summ.get(("tunnel", load))
        if tb is None:
            continue
        tgt[f"p99_{load}_ms"] = tb["p99_ms_median"]
        tgt[f"p99_{load}_over_alone"] = round(tb["p99_ms_median"] / t["p99_ms_median"], 2)
        tgt[f"p99_{load}_ok"] = tgt[f"p99_{load}_over_alone"] <= TARGET_BULK_P99_RATIO
        db = summ.get(("direct", load))
        if d is not None and db is not None:  # the machine's own share: direct beside a download
            tgt[f"direct_p99_{load}_over_alone"] = round(db["p99_ms_median"] / d["p99_ms_median"], 2)
    emit(**tgt)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(ROOT / "build" / "gcc"))
    ap.add_argument("--duration", type=int, default=6, help="seconds of each wrk run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--wrk-threads", type=int, default=2)
    ap.add_argument("--threads", type=int, default=core.THREADS, help="reactors per binary")
    ap.add_argument("--data-conns", type=int, help="originctl --data-conns (default: its own, 4)")
    ap.add_argument("--paths", default="tunnel,ssh,direct")
    ap.add_argument("--no-bulk", action="store_true", help="skip the runs beside a download")
    a = ap.parse_args()
    for exe in (NGINX, WRK, CURL):
        if not os.access(exe, os.X_OK):
            sys.exit(f"{exe} missing: scripts/install-bench-deps.sh")
    loads = ["none"] if a.no_bulk else ["none"] + list(BULK_LOADS)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="et-requests-"))
    nginx = None
    paths = []
    lines = []
    try:
        nginx = Nginx(tmp)
        for name in a.paths.split(","):
            if name == "tunnel":
                paths.append(TunnelPath(a.build, tmp / "tunnel", nginx.port, a.threads,
                                        a.data_conns))
            elif name == "ssh":
                paths.append(SshPath(nginx.port))
            elif name == "direct":
                paths.append(DirectPath(nginx.port))
            else:
                sys.exit(f"unknown path {name}")
        for p in paths:
            check_path(p)
        log(f"nginx pid {nginx.proc.pid} port {nginx.port}; paths "
            + ", ".join(f"{p.name}:{p.port}" for p in paths))
        for run in range(a.runs):
            for load in loads:
                for p in paths:
                    lines.append(run_wrk(p, a, load, run))
        summarize(lines, a)
    finally:
        for p in reversed(paths):
            p.stop()
        if nginx is not None:
            nginx.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if lines and all(x["ok"] for x in lines) else 1)


if __name__ == "__main__":
    main()
