#!/usr/bin/env python3
"""streams.py: throughput with parallel streams, and how it scales with reactors (issue #5).

    bench/streams.py [--build build/gcc] [--only paths,scale] [--counts 1,8] [--total BYTES]
                     [--scale-threads 1,2,4] [--runs 3] [--relay PATH]

- throughput_streams (--only paths): N parallel streams (--counts: 1 and 8) moving TOTAL bytes
  together (2 GiB; TOTAL/N each), downloaded (service -> client) and uploaded, through four
  paths: the tunnel (edged + originctl, --threads 2, 4 data sockets), `ssh -R` (a private
  sshd, bench/sshpeer.py), the minimal TLS relay (bench/tls_relay.c, one TLS connection per
  stream: the ceiling of this design) and direct (client straight to the service: the floor).
  mb_per_s: payload bytes over wall time, first connect to last byte; cpu_s_per_gb: user+system
  CPU of the path's two processes (edged + originctl, sshd session + ssh client, relay edge +
  relay origin) per GB moved.
- throughput_scale (--only scale): 8 streams through the tunnel with 1, 2 and 4 reactors
  (`--threads N` on edged and originctl alike), each way.
- throughput_streams_summary / throughput_scale_summary: medians over --runs, per path (or
  reactor count), stream count and direction, and ratios to direct and to the relay.

The clients and the service are threads of this process (bench/relay.py's trial(), as in
core.py's throughput bench), on the same 2 cores as what they measure: compare the paths within
one run. Runs alternate between paths. Everything runs on 127.0.0.1 and is stopped by PID.
"""
import argparse
import pathlib
import statistics
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import core  # noqa: E402
import relay as R  # noqa: E402  (Service, trial, Relay, relay_binary)
import sshpeer  # noqa: E402
import tunnel as T  # noqa: E402

emit = core.emit


class TunnelPath:
    def __init__(self, build, tmp, svc_port, threads):
        (self.port,) = T.free_ports(1)
        self.s = core.Setup(build, tmp, {self.port: svc_port}, threads=threads)

    def pids(self):
        return list(self.s.pids())

    def stop(self):
        self.s.stop()


class SshPath:
    def __init__(self, svc_port):
        (self.port,) = T.free_ports(1)
        self.t = sshpeer.SshTunnel(self.port, svc_port).__enter__()

    def pids(self):
        return [self.t.session_pid, self.t.ssh_pid]

    def stop(self):
        self.t.close()


class RelayPath:
    def __init__(self, binary, tmp, svc_port):
        self.r = R.Relay(binary, T.Pki(tmp / "pki"), svc_port, tmp / "logs")
        self.port = self.r.pub

    def pids(self):
        return [p.pid for p in self.r.procs()]

    def stop(self):
        self.r.stop()


class DirectPath:
    def __init__(self, svc_port):
        self.port = svc_port

    def pids(self):
        return []

    def stop(self):
        pass


def measure(svc, path, direction, streams, total):
    per = total // streams
    pids = path.pids()
    cpu0 = sum(sshpeer.cpu_or_zero(p) for p in pids)
    moved, dt, errors, _ = R.trial(svc, path.port, direction, streams, per)
    cpu = sum(sshpeer.cpu_or_zero(p) for p in pids) - cpu0
    line = dict(streams=streams, direction=direction, bytes=moved,
                ok=moved == streams * per and not errors, seconds=round(dt, 3),
                mb_per_s=round(moved / dt / 1e6, 1),
                cpu_s_per_gb=round(cpu / (max(moved, 1) / 1e9), 3) if pids else None)
    if errors:
        line["errors"] = errors[:4]
    return line


def summarize(bench, lines, key):
    out = {}
    for k in sorted({tuple(x[f] for f in key) for x in lines}, key=str):
        xs = [x for x in lines if tuple(x[f] for f in key) == k and x["ok"]]
        if not xs:
            continue
        s = dict(bench=bench, **dict(zip(key, k)), runs=len(xs),
                 mb_per_s_median=round(statistics.median(x["mb_per_s"] for x in xs), 1),
                 mb_per_s_runs=[x["mb_per_s"] for x in xs])
        cpus = [x["cpu_s_per_gb"] for x in xs if x["cpu_s_per_gb"] is not None]
        if cpus:
            s["cpu_s_per_gb_median"] = round(statistics.median(cpus), 3)
        out[k] = s
    return out


def bench_paths(a, tmp, svc, binary):
    paths = {}
    lines = []
    try:
        for name in a.paths.split(","):
            if name == "tunnel":
                paths[name] = TunnelPath(a.build, tmp / "tunnel", svc.port, a.threads)
            elif name == "ssh":
                paths[name] = SshPath(svc.port)
            elif name == "relay":
                paths[name] = RelayPath(binary, tmp / "relay", svc.port)
            elif name == "direct":
                paths[name] = DirectPath(svc.port)
            else:
                sys.exit(f"unknown path {name}")
        for run in range(a.runs):
            for n in a.counts:
                for direction in ("download", "upload"):
                    for name, p in paths.items():
                        line = dict(bench="throughput_streams", path=name, run=run,
                                    threads=a.threads if name == "tunnel" else None,
                                    **measure(svc, p, direction, n, a.total))
                        emit(**line)
                        lines.append(line)
    finally:
        for p in paths.values():
            p.stop()
    summ = summarize("throughput_streams_summary", lines, ("path", "streams", "direction"))
    for (name, n, direction), s in summ.items():
        for ref in ("direct", "relay"):
            r = summ.get((ref, n, direction))
            if r is not None and ref != name:
                s[f"over_{ref}"] = round(s["mb_per_s_median"] / r["mb_per_s_median"], 2)
        emit(**s)


def bench_scale(a, tmp, svc):
    lines = []
    for run in range(a.runs):
        for threads in a.scale_threads:
            p = TunnelPath(a.build, tmp / f"scale-{threads}-{run}", svc.port, threads)
            try:
                for direction in ("download", "upload"):
                    line = dict(bench="throughput_scale", path="tunnel", threads=threads, run=run,
                                **measure(svc, p, direction, a.scale_streams, a.total))
                    emit(**line)
                    lines.append(line)
            finally:
                p.stop()
    summ = summarize("throughput_scale_summary", lines, ("threads", "streams", "direction"))
    for (threads, n, direction), s in summ.items():
        one = summ.get((min(a.scale_threads), n, direction))
        if one is not None:
            s[f"over_{min(a.scale_threads)}_threads"] = round(
                s["mb_per_s_median"] / one["mb_per_s_median"], 2)
        emit(**s)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(ROOT / "build" / "gcc"))
    ap.add_argument("--only", default="paths,scale")
    ap.add_argument("--paths", default="tunnel,ssh,relay,direct")
    ap.add_argument("--counts", default="1,8", help="stream counts of the path comparison")
    ap.add_argument("--total", type=int, default=2 << 30, help="bytes of one measurement")
    ap.add_argument("--threads", type=int, default=core.THREADS, help="the tunnel's reactors")
    ap.add_argument("--scale-threads", default="1,2,4")
    ap.add_argument("--scale-streams", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--relay", help="tls_relay binary (default: bench/relay.py builds it)")
    a = ap.parse_args()
    a.counts = [int(x) for x in a.counts.split(",")]
    a.scale_threads = [int(x) for x in a.scale_threads.split(",")]
    only = set(a.only.split(","))
    with tempfile.TemporaryDirectory(prefix="et-streams-") as d:
        tmp = pathlib.Path(d)
        svc = R.Service()
        try:
            if "paths" in only:
                binary = R.relay_binary(a.relay, tmp) if "relay" in a.paths else None
                bench_paths(a, tmp, svc, binary)
            if "scale" in only:
                bench_scale(a, tmp, svc)
        finally:
            svc.close()


if __name__ == "__main__":
    main()
