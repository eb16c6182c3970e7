#!/usr/bin/env python3
"""core.py: the tunnel core's figures, one JSON line each.

    bench/core.py [--build build/gcc] [--trials 200]
                  [--only throughput,cancel,cancel_upload,memory]

- throughput: one download and one upload of SIZE bytes through the tunnel, MB/s, and the CPU
  seconds edged and originctl spent per GB (from /proc/PID/stat).
- cancel: a victim stream's client reads 1 MiB, then resets its connection (SO_LINGER 0); the
  local service records when its own socket reports the peer gone and how many bytes it wrote
  after the client's close. N background downloads (bench/load.py, its own process) saturate
  the tunnel meanwhile. p50/p99/max over TRIALS, with the control socket, in --no-control mode,
  and a direct connection to the service under the same load as the floor.
- cancel_upload (the same --only name): the upload direction. A victim client sends as fast as
  it can until the local service has read 1 MiB, then resets (SO_LINGER 0), while N background
  uploads (bench/load.py upload) saturate the tunnel toward the origin. The service reads as fast
  as it can and records when its socket reports the peer gone (a reset, or the FIN of a close)
  and how many bytes it still received after the client's close: queued upload data should be
  dropped, not delivered. Same modes, p50/p99/max over TRIALS.
- memory: RSS of edged and originctl with no stream and with STREAMS (10,000) idle open
  streams; bytes per open stream at each end (user space only: kernel socket buffers are not
  in RSS).

Everything runs on 127.0.0.1 and is stopped by PID. Timings are medians of one run on a small
shared machine: compare ratios within one run, not absolute numbers across runs.
"""
import argparse
import json
import os
import resource
import pathlib
import select
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
import tunnel as T  # noqa: E402  (the integration tests' process and PKI helpers)

CLK = os.sysconf("SC_CLK_TCK")
THREADS = int(os.environ.get("ET_BENCH_THREADS", "2"))
MODES = os.environ.get("ET_BENCH_MODES", "control,no-control,direct").split(",")


def emit(**kv):
    print(json.dumps(kv), flush=True)


def cpu_seconds(pid):
    f = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / CLK


def rss_bytes(pid):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def mem_kinds(pid):
    """RSS, PSS and USS (private pages) of a process, in bytes, from smaps_rollup: RSS counts
    shared library pages in full, PSS shares them out, USS is what the process alone holds."""
    v = {}
    for line in pathlib.Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":"):
            v[parts[0][:-1]] = int(parts[1]) * 1024
    return {"rss": v.get("Rss", 0), "pss": v.get("Pss", 0),
            "uss": v.get("Private_Clean", 0) + v.get("Private_Dirty", 0)}


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class Setup:
    """An edge and an origin serving `ports` (public -> local) from a temp dir."""

    def __init__(self, build, logdir, ports, no_control=False, data_conns=4, threads=THREADS):
        self.pki = T.Pki(logdir / "pki")
        self.key = T.make_token_key(logdir / "token.key")
        # The memory bench holds 10,000 streams from one address: no per-address or
        # per-session stream limit (edged's defaults are 1024 and 10,000).
        self.edge = T.Edge(build, self.pki, self.key, logdir, ports=list(ports), threads=threads,
                           extra=["--max-client-conns", "0", "--max-streams", "0"])
        self.origin = None
        try:
            tok = self.edge.token("bench", tcp=list(ports))
            self.origin = T.Origin(build, self.edge, tok, ports, logdir, no_control=no_control,
                                   data_conns=data_conns, threads=threads)
            self.origin.wait_ready()
        except BaseException:
            self.stop()
            raise

    def pids(self):
        return self.edge.proc.pid, self.origin.proc.pid

    def stop(self):
        if self.origin is not None:
            self.origin.proc.stop()
        self.edge.proc.stop()


def bench_throughput(build, tmp, size):
    pub, svc = T.free_ports(2)
    s = Setup(build, tmp / "tp", {pub: svc})
    try:
        throughput_runs(s, pub, svc, size)
    finally:
        s.stop()


def throughput_runs(s, pub, svc, size):
    e_pid, o_pid = s.pids()
    blob = b"\xa5" * (1 << 20)
    for direction in ("download", "upload"):
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", svc))
        srv.listen(1)
        got = [0]

        def service():
            c, _ = srv.accept()
            if direction == "download":
                left = size
                while left > 0:
                    left -= c.send(memoryview(blob)[: min(left, len(blob))])
                c.shutdown(socket.SHUT_WR)
                c.recv(1)
            else:
                buf = bytearray(1 << 20)
                while True:
                    k = c.recv_into(buf)
                    if k == 0:
                        break
                    got[0] += k
            c.close()

        th = threading.Thread(target=service, daemon=True)
        th.start()
        cpu0 = cpu_seconds(e_pid) + cpu_seconds(o_pid)
        t0 = time.monotonic()
        c = socket.create_connection(("127.0.0.1", pub), timeout=60)
        moved = 0
        if direction == "download":
            buf = bytearray(1 << 20)
            while True:
                k = c.recv_into(buf)
                if k == 0:
                    break
                moved += k
        else:
            left = size
            while left > 0:
                left -= c.send(memoryview(blob)[: min(left, len(blob))])
            c.shutdown(socket.SHUT_WR)
            c.recv(1)
            th.join(60)
            moved = got[0]
        dt = time.monotonic() - t0
        cpu = cpu_seconds(e_pid) + cpu_seconds(o_pid) - cpu0
        c.close()
        th.join(60)
        srv.close()
        emit(bench="throughput", direction=direction, bytes=moved, ok=moved == size,
             seconds=round(dt, 3), mb_per_s=round(moved / dt / 1e6, 1),
             tunnel_cpu_s_per_gb=round(cpu / (moved / 1e9), 3))


def cancel_trials(pub_port, svc_srv, trials, label):
    """Victim trials against svc_srv (a listening socket serving an endless stream)."""
    blob = b"\x33" * (256 << 10)
    lat, after = [], []
    for _ in range(trials):
        res = {}
        done = threading.Event()

        def service():
            c, _ = svc_srv.accept()
            try:
                while True:
                    res["sent"] = res.get("sent", 0) + c.send(blob)
            except OSError:
                res["err_t"] = time.monotonic_ns()
            c.close()
            done.set()

        th = threading.Thread(target=service, daemon=True)
        th.start()
        c = socket.create_connection(("127.0.0.1", pub_port), timeout=10)
        got = 0
        while got < (1 << 20):
            k = len(c.recv(1 << 20))
            if k == 0:
                break
            got += k
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        res["sent_at_close"] = res.get("sent", 0)  # what the service had written by then
        res["t"] = time.monotonic_ns()
        c.close()
        if not done.wait(15):
            emit(bench="cancel", mode=label, error="service never saw the reset")
            return None
        th.join(5)
        lat.append((res["err_t"] - res["t"]) / 1e6)
        after.append(max(0, res.get("sent", 0) - res["sent_at_close"]))
    return lat, after


UPLOAD_PROGRESS = 1 << 20  # the service has read this much when the victim client resets


def cancel_upload_trials(pub_port, svc_srv, trials, label):
    """Upload victims against svc_srv: the client sends until the service has read
    UPLOAD_PROGRESS bytes, then resets. Returns (latencies ms, bytes read after the close,
    {what the service saw: count}) or None."""
    blob = b"\x44" * (64 << 10)
    lat, after, saw = [], [], {}
    for _ in range(trials):
        res = {"log": []}
        progress = threading.Event()
        done = threading.Event()

        def service():
            c, _ = svc_srv.accept()
            c.settimeout(15)
            buf = bytearray(1 << 20)
            got = 0
            try:
                for _ in range(1 << 20):  # each pass reads >= 1 byte, or ends
                    k = c.recv_into(buf)
                    t = time.monotonic_ns()
                    if k == 0:
                        res["end"], res["end_t"] = "eof", t
                        break
                    got += k
                    res["log"].append((t, k))
                    if got >= UPLOAD_PROGRESS:
                        progress.set()
            except OSError as e:
                res["end"], res["end_t"] = type(e).__name__, time.monotonic_ns()
            c.close()
            done.set()

        th = threading.Thread(target=service, daemon=True)
        th.start()
        c = socket.create_connection(("127.0.0.1", pub_port), timeout=10)
        c.setblocking(False)
        deadline = time.monotonic() + 15
        while not progress.is_set() and time.monotonic() < deadline:
            _, w, _ = select.select([], [c], [], 0.002)
            if w:
                try:
                    c.send(blob)
                except BlockingIOError:
                    pass
        if not progress.is_set():
            emit(bench="cancel", direction="upload", mode=label,
                 error="the service never read 1 MiB")
            c.close()
            return None
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        t_close = time.monotonic_ns()
        c.close()
        if not done.wait(15) or "end_t" not in res:
            emit(bench="cancel", direction="upload", mode=label,
                 error="service never saw the reset")
            return None
        th.join(5)
        lat.append((res["end_t"] - t_close) / 1e6)
        after.append(sum(k for t, k in res["log"] if t > t_close))
        saw[res["end"]] = saw.get(res["end"], 0) + 1
    return lat, after, saw


def bench_cancel(build, tmp, trials, load_streams, load_seconds, direction="download"):
    for mode in MODES:
        pub, svc, load_pub, load_svc = T.free_ports(4)
        s = Setup(build, tmp / f"cancel-{direction}-{mode}", {pub: svc, load_pub: load_svc},
                  no_control=(mode == "no-control"))
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", svc))
        srv.listen(64)
        load = subprocess.Popen([sys.executable, str(ROOT / "bench" / "load.py"), str(load_pub),
                                 str(load_svc), str(load_streams), str(load_seconds), direction],
                                stdout=subprocess.PIPE, text=True)
        saw = None
        try:
            load.stdout.readline()  # ready
            time.sleep(1.0)  # let the load saturate the tunnel
            target = svc if mode == "direct" else pub
            if direction == "upload":
                r = cancel_upload_trials(target, srv, trials, mode)
                if r is not None:
                    r, saw = r[:2], r[2]
            else:
                r = cancel_trials(target, srv, trials, mode)
        finally:
            load.terminate()
            try:
                load.wait(10)
            except subprocess.TimeoutExpired:
                load.kill()
            srv.close()
            s.stop()
        if r is None:
            continue
        lat, after = r
        if mode != "direct":
            acks = s.edge.proc.events("cancel_ack")
            rtt = [int(a["rtt_ns"]) / 1e6 for a in acks if "rtt_ns" in a]
            handle = [int(a["handle_ns"]) / 1e6 for a in acks if "handle_ns" in a]
            if rtt:
                emit(bench="cancel_ack", direction=direction, mode=mode, acks=len(rtt),
                     rtt_p50_ms=round(statistics.median(rtt), 3), rtt_p99_ms=round(pct(rtt, 99), 3),
                     origin_handle_p50_ms=round(statistics.median(handle), 3))
        line = dict(bench="cancel", direction=direction, mode=mode, trials=len(lat),
                    load_streams=load_streams, p50_ms=round(statistics.median(lat), 3),
                    p99_ms=round(pct(lat, 99), 3), max_ms=round(max(lat), 3),
                    worst_ms=[round(x, 2) for x in sorted(lat)[-5:]],
                    bytes_after_p50=int(statistics.median(after)), bytes_after_max=max(after),
                    latencies_ms=[round(x, 3) for x in lat])
        if saw is not None:
            line["service_saw"] = saw
        emit(**line)


def bench_memory(build, tmp, streams):
    pub, svc = T.free_ports(2)
    s = Setup(build, tmp / "mem", {pub: svc})
    try:
        memory_run(s, pub, svc, streams, pathlib.Path(build).name)
    finally:
        s.stop()


def memory_run(s, pub, svc, streams, build_name=None):
    e_pid, o_pid = s.pids()
    # The service side lives in its own process (bench/hold.py), so this one holds only the
    # public clients' descriptors.
    hold = subprocess.Popen([sys.executable, str(ROOT / "bench" / "hold.py"), str(svc),
                             str(streams)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    clients = []
    try:
        hold.stdout.readline()  # listening
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        time.sleep(0.5)
        e0, o0 = rss_bytes(e_pid), rss_bytes(o_pid)
        emit(bench="memory_idle", build=build_name, edged=mem_kinds(e_pid),
             originctl=mem_kinds(o_pid))
        for _ in range(streams):
            c = socket.create_connection(("127.0.0.1", pub), timeout=10)
            c.sendall(b"x")  # one byte, so the stream is opened and carried end to end
            clients.append(c)
        held = 0
        deadline = time.monotonic() + 120
        while held < streams and time.monotonic() < deadline:
            line = hold.stdout.readline()
            if not line:
                break
            held = int(line.split()[1])
        assert held >= streams, f"only {held} of {streams} streams reached the service"
        time.sleep(1.0)
        e1, o1 = rss_bytes(e_pid), rss_bytes(o_pid)
        emit(bench="memory", build=build_name, streams=streams, edged_rss_idle=e0, originctl_rss_idle=o0,
             edged_rss_open=e1, originctl_rss_open=o1,
             edged_bytes_per_stream=round((e1 - e0) / streams),
             originctl_bytes_per_stream=round((o1 - o0) / streams))
    finally:
        for c in clients:
            c.close()
        hold.stdin.close()
        try:
            hold.wait(10)
        except subprocess.TimeoutExpired:
            hold.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(ROOT / "build" / "gcc"))
    ap.add_argument("--only", default="throughput,cancel,cancel_upload,memory")
    ap.add_argument("--size", type=int, default=2 << 30)
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--load-streams", type=int, default=4)
    ap.add_argument("--streams", type=int, default=10000)
    a = ap.parse_args()
    only = set(a.only.split(","))
    with tempfile.TemporaryDirectory(prefix="et-bench-") as d:
        tmp = pathlib.Path(d)
        if "throughput" in only:
            bench_throughput(a.build, tmp, a.size)
        if "cancel" in only:
            bench_cancel(a.build, tmp, a.trials, a.load_streams, load_seconds=a.trials * 0.2 + 30)
        if "cancel_upload" in only:
            bench_cancel(a.build, tmp, a.trials, a.load_streams, load_seconds=a.trials * 0.2 + 30,
                         direction="upload")
        if "memory" in only:
            bench_memory(a.build, tmp, a.streams)


if __name__ == "__main__":
    main()
