#!/usr/bin/env python3
"""netns.py: cancel latency and throughput across a shaped link (issue #5), one JSON line each.

    bench/netns.py [--build build/gcc] [--trials 200] [--direct-trials 40]
                   [--configs CC:SYSCTL_LOWAT[:DATA_LOWAT[:MODE+MODE]],...]
                   [--directions download,upload] [--only cancel,throughput]
                   [--rate 100mbit] [--burst 32kbit] [--latency 50ms]

Run as root (ip netns, tc). For each configuration it makes two fresh network namespaces,
etb-edge-PID-K and etb-origin-PID-K, joined by one veth pair (10.199.X.1/24 on the edge side,
.2/24 on the origin side; nothing is routed anywhere else), and shapes both directions with
`tc qdisc add dev VETH root tbf rate 100mbit burst 32kbit latency 50ms` (one per end, so each
direction has its own 100 Mbit/s bottleneck with a drop-tail queue of up to ~50 ms). Every
ip/tc/sysctl command is printed in the `netns_setup` line. edged (tunnel listener on
10.199.X.1:7443, public ports on 127.0.0.1) and the public clients run in the edge namespace;
originctl and the local services run in the origin namespace, and originctl dials the edge
across the shaped veth. Clients and services are bench/nsagent.py processes started with
`ip netns exec NS /usr/bin/python3 bench/nsagent.py`.

Per configuration, with a flood of LOAD_STREAMS (4) endless streams through the tunnel in one
direction (download: origin service -> public client; upload: the reverse):
- netns_rtt: the floor, a 64-byte ping-pong on its own TCP connection from the edge namespace
  to an echo service in the origin namespace across the veth, running all through each mode's
  cancel trials (at least 200 exchanges), so each mode is compared with the round trip of its
  own minutes. It crosses the flooded direction once.
- netns_cancel, modes control / no-control / direct: the victim client (edge namespace) opens a
  stream; download: it reads 256 KiB, then resets (SO_LINGER 0), and the service (origin
  namespace) records when its send fails and what it wrote after the client's close; upload:
  it sends until the service has read 256 KiB, then resets, and the service records when its
  read fails and what it read after the client's close. Both are client-side cancels, so in
  the upload case the CANCEL crosses the flooded direction and in the download case it does
  not. `direct` is a client straight to the service across the veth under the same flood (the
  reference for bytes after; at most --direct-trials, as each is a new TCP connection into a
  full queue). `to_256k_p50_ms`: from connect until 256 KiB had arrived. CLOCK_MONOTONIC is
  machine-wide, so stamps taken in the two namespaces compare directly. p99 over fewer than
  100 trials is the maximum or next to it.
- netns_target: the issue's target: control cancel p50 and p99 within 1 ms of the ping-pong's
  p50 and p99 under the same flood, and bytes after no more than direct's max + 256 KiB.
- netns_throughput: one 32 MiB stream, no flood, through the tunnel and direct, each way
  (after the cancel phases, on the control-socket tunnel).
- netns_sockets: congestion control, smoothed RTT, cwnd and unsent bytes (ss -ti) of the
  tunnel's sockets on the sending side under each flood (one of them is the idle control
  socket): what the configuration really did.
- netns_compare: one line per configuration with the figures side by side.

Configurations (--configs, comma-separated CC:SYSCTL_LOWAT[:DATA_LOWAT[:MODE+MODE[:BIN_CC]]]):
- CC, congestion control, is set twice: `sysctl -w net.ipv4.tcp_congestion_control=CC` in each
  namespace (a child namespace may only pick an algorithm the root namespace allows in
  net.ipv4.tcp_allowed_congestion_control; the outcome is printed, and the root namespace is
  never touched), and `congctl CC` on the veth's subnet route in each namespace, which every
  TCP connection across the shaped link takes whatever the sysctl allowed.
- SYSCTL_LOWAT: net.ipv4.tcp_notsent_lowat in both namespaces ('default': left at -1). The
  engine's data sockets set TCP_NOTSENT_LOWAT themselves, which overrides it, so it reaches
  the control sockets, the local sockets and the direct connections only.
- DATA_LOWAT: the data sockets' TCP_NOTSENT_LOWAT: 'compiled' (default: ET_DATA_LOWAT, 32 KiB),
  'off' (not set: the sysctl applies) or a byte count. Other than 'compiled' it is done without
  a rebuild by bench/lowat_preload.c, compiled into the temp dir and LD_PRELOADed into edged
  and originctl, which rewrites (or skips) the engine's setsockopt(TCP_NOTSENT_LOWAT).
- MODE+MODE: the cancel modes of that configuration (default --modes).
- BIN_CC: both binaries' --tcp-congestion (default 'system', so CC alone decides; the binaries'
  own default is bbr). 'cubic:default:::bbr' is the product as shipped on a cubic host: the
  tunnel's sockets ask for BBR themselves, the direct connections and the ping-pong stay cubic.
Both namespaces also get net.ipv4.tcp_no_metrics_save=1 (no ssthresh or RTT cached from an
earlier connection of the same run).

Duration: about 10 minutes with --trials 50 --direct-trials 20 for the default configurations
(CUBIC's full drop-tail queue makes each trial slow: ~0.25 s through the tunnel, ~2 s direct);
the default --trials 200 takes about 25 minutes.

The binaries are copied to a temp dir first (a rebuild elsewhere cannot swap them mid-run).
Every process is stopped by PID and the namespaces are deleted in `finally`. Timings are from
one run on a small shared machine: compare ratios within one run.
"""
import argparse
import hashlib
import json
import os
import pathlib
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
import tunnel as T  # noqa: E402  (Pki, make_token_key, Edge.token, Proc)

PY = "/usr/bin/python3"
AGENT = ROOT / "bench" / "nsagent.py"
THREADS = int(os.environ.get("ET_BENCH_THREADS", "2"))
KiB = 1 << 10
WINDOW = 256 * KiB  # one stream window (ET_WINDOW_DEFAULT)
TUNNEL_PORT = 7443
PUB_VICTIM, PUB_FLOOD = 20001, 20002
SVC_VICTIM, SVC_FLOOD, SVC_ECHO = 30001, 30002, 30003
CLK = os.sysconf("SC_CLK_TCK")


def emit(**kv):
    print(json.dumps(kv), flush=True)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def cpu_seconds(pid):
    f = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / CLK


def run(argv, log=None, check=True):
    """Run a command; record it (as the shell line) in `log`."""
    if log is not None:
        log.append(" ".join(argv))
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.returncode} {r.stderr.strip()}")
    return r


# ---------------------------------------------------------------------------------------------
# Namespaces


class Netns:
    """Two namespaces and a shaped veth pair; delete() removes both (their veth goes too)."""

    def __init__(self, k, cc, lowat, rate, burst, latency):
        pid = os.getpid()
        self.edge, self.origin = f"etb-edge-{pid}-{k}", f"etb-origin-{pid}-{k}"
        self.ve, self.vo = f"etbe{pid}{k}"[:15], f"etbo{pid}{k}"[:15]
        x = (pid + k) % 200 + 20
        self.net = f"10.199.{x}.0/24"
        self.ip_e, self.ip_o = f"10.199.{x}.1", f"10.199.{x}.2"
        self.cmds = []
        self.created = []
        self.cc_sysctl = {}
        self.lowat_sysctl = {}
        try:
            self._make(cc, lowat, rate, burst, latency)
        except BaseException:
            self.delete()
            raise

    def _make(self, cc, lowat, rate, burst, latency):
        E, O, c = self.edge, self.origin, self.cmds
        for ns in (E, O):
            run(["ip", "netns", "add", ns], c)
            self.created.append(ns)
        run(["ip", "link", "add", self.ve, "netns", E, "type", "veth", "peer", "name", self.vo,
             "netns", O], c)
        for ns, dev, ip in ((E, self.ve, self.ip_e), (O, self.vo, self.ip_o)):
            run(["ip", "-n", ns, "link", "set", "lo", "up"], c)
            run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev], c)
            run(["ip", "-n", ns, "link", "set", dev, "up"], c)
            run(["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf",
                 "rate", rate, "burst", burst, "latency", latency], c)
            # every TCP connection across the veth takes this algorithm (see the docstring)
            run(["ip", "-n", ns, "route", "replace", self.net, "dev", dev, "proto", "kernel",
                 "scope", "link", "src", ip, "congctl", cc], c)
            r = run(["ip", "netns", "exec", ns, "sysctl", "-w",
                     f"net.ipv4.tcp_congestion_control={cc}"], c, check=False)
            self.cc_sysctl[ns] = "ok" if r.returncode == 0 else r.stderr.strip().split(": ")[-1]
            if lowat != "default":
                run(["ip", "netns", "exec", ns, "sysctl", "-w",
                     f"net.ipv4.tcp_notsent_lowat={lowat}"], c)
            # no cached ssthresh/RTT from an earlier connection of the same run
            run(["ip", "netns", "exec", ns, "sysctl", "-w", "net.ipv4.tcp_no_metrics_save=1"], c)
            self.lowat_sysctl[ns] = run(["ip", "netns", "exec", ns, "sysctl", "-n",
                                         "net.ipv4.tcp_notsent_lowat"]).stdout.strip()
        self.qdisc = {ns: run(["ip", "netns", "exec", ns, "tc", "qdisc", "show", "dev", dev]
                              ).stdout.strip() for ns, dev in ((E, self.ve), (O, self.vo))}

    def delete(self):
        for ns in self.created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self.created = []

    def ss(self, ns, port_filter):
        r = run(["ip", "netns", "exec", ns, "ss", "-tinH", "state", "established", port_filter],
                check=False)
        return r.stdout


def parse_ss(text):
    """[{cc, rtt_ms, cwnd, notsent}] per socket from `ss -tinH` (info on the following line)."""
    out = []
    for line in text.splitlines():
        if not line.startswith((" ", "\t")):
            continue
        f = line.split()
        d = {"cc": next((w for w in f if w in ("cubic", "bbr", "reno")), None)}
        for w in f:
            if w.startswith("rtt:"):
                d["rtt_ms"] = float(w[4:].split("/")[0])
            elif w.startswith("cwnd:"):
                d["cwnd"] = int(w[5:])
            elif w.startswith("notsent:"):
                d["notsent"] = int(w[8:])
        out.append(d)
    return out


# ---------------------------------------------------------------------------------------------
# Agents


class Agent:
    """A bench/nsagent.py process in a namespace, driven over its stdin/stdout."""

    def __init__(self, ns, name):
        self.name = name
        self.p = subprocess.Popen(["ip", "netns", "exec", ns, PY, str(AGENT)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  bufsize=1, start_new_session=True)
        self.pid = self.p.pid
        self.replies = queue.Queue()
        self.events = queue.Queue()
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            try:
                m = json.loads(line)
            except ValueError:
                continue
            (self.replies if "re" in m else self.events).put(m)
        self.replies.put(None)

    def call(self, op, timeout=60, **kw):
        self.next_id += 1
        kw.update(op=op, id=self.next_id)
        self.p.stdin.write(json.dumps(kw) + "\n")
        self.p.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            try:
                m = self.replies.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"{self.name}: no answer to {op} in {timeout} s")
            if m is None:
                raise RuntimeError(f"{self.name}: exited during {op}")
            if m["re"] != self.next_id:
                continue  # a late answer to an earlier call that timed out
            if not m.get("ok"):
                raise RuntimeError(f"{self.name}: {op}: {m.get('error')}")
            return m

    def event(self, pred, timeout):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                m = self.events.get(timeout=left)
            except queue.Empty:
                return None
            if pred(m):
                return m

    def stop(self):
        if self.p.poll() is None:
            try:
                self.p.stdin.close()
            except OSError:
                pass
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.p.wait(5)


# ---------------------------------------------------------------------------------------------
# The tunnel in the namespaces


class Tunnel:
    def __init__(self, bindir, pki, key, net, logdir, no_control, preload=(), congestion="system"):
        """preload: ("env", "LD_PRELOAD=...", "ET_BENCH_DATA_LOWAT=...") or () (env execs the
        binary, so the PID is still the binary's). congestion: both binaries' --tcp-congestion
        ('system': the namespace's sysctl and route decide, as for every other socket)."""
        self.edge = self.origin = None
        e_tun = f"{net.ip_e}:{TUNNEL_PORT}"
        self.edge = T.Proc("edged", [
            "ip", "netns", "exec", net.edge, *preload, bindir / "edged", "--tunnel", e_tun,
            "--cert", pki.cert, "--key", pki.key, "--token-key", key,
            "--tcp-ports", f"{PUB_VICTIM}-{PUB_FLOOD}", "--tcp-bind", "127.0.0.1",
            "--threads", THREADS, "--tcp-congestion", congestion], logdir)
        try:
            self.edge.wait_event("listening", tunnel=e_tun)
            # Edge.token needs only .bindir and .token_key
            tok = T.Edge.token(types.SimpleNamespace(bindir=bindir, token_key=key), "bench",
                               tcp=[PUB_VICTIM, PUB_FLOOD])
            argv = ["ip", "netns", "exec", net.origin, *preload, bindir / "originctl", "connect",
                    "--edge", e_tun, "--token", tok, "--pin", pki.pin, "--threads", THREADS,
                    "--tcp-congestion", congestion,
                    "--tcp", f"{PUB_VICTIM}=127.0.0.1:{SVC_VICTIM}",
                    "--tcp", f"{PUB_FLOOD}=127.0.0.1:{SVC_FLOOD}"]
            if no_control:
                argv.append("--no-control")
            self.origin = T.Proc("originctl", argv, logdir)
            ready = self.origin.wait_event("ready")[0]
            session = ready.get("session", "").lower()
            n = int(ready["control"]) + int(ready["data"])
            assert int(ready["control"]) == (0 if no_control else 1), ready
            self.edge.wait_event("socket_up", count=n, session=session)
            for p in (PUB_VICTIM, PUB_FLOOD):
                self.edge.wait_event("tcp_listen", port=p)
        except BaseException:
            self.stop()
            raise

    def stop(self):
        if self.origin is not None:
            self.origin.stop()
        if self.edge is not None:
            self.edge.stop()


# ---------------------------------------------------------------------------------------------
# Measurements


def one_trial(ee, eo, host, port, direction, tid):
    """One victim; returns (latency ms, bytes after, what the service saw, ms to 256 KiB)."""
    if direction == "download":
        r = ee.call("victim_down", host=host, port=port, tid=tid, need=WINDOW, timeout=60)
        ready_ms = r["read_ms"]
    else:
        o = ee.call("victim_up_open", host=host, port=port, tid=tid, timeout=30)
        prog = eo.event(lambda m: m.get("ev") == "progress" and m["id"] == tid, 30)
        r = ee.call("victim_up_reset", tid=tid, timeout=30)
        if prog is None:
            raise RuntimeError("the service never got 256 KiB")
        ready_ms = (prog["t"] - o["t_open"]) / 1e6
    ev = eo.event(lambda m: m.get("ev") == "victim" and m["id"] == tid, 20)
    if ev is None or ev["err_t"] is None:
        raise RuntimeError("the service never saw the reset")
    t_close = r["t_close"]
    before = 0
    for t, c in zip(ev["t"], ev["cum"]):
        if t <= t_close:
            before = c
    total = ev["cum"][-1] if ev["cum"] else 0
    return (ev["err_t"] - t_close) / 1e6, max(0, total - before), ev["err"], ready_ms


def cancel_trials(ee, eo, host, port, direction, trials, label):
    """Victim trials; returns (latencies ms, bytes after, service saw, ms to 256 KiB, failures).
    A failed trial is counted and skipped; more than a tenth of them failing ends the set."""
    lat, after, saw, ready, failed = [], [], {}, [], {}
    for i in range(trials):
        tid = (hash(label) & 0xFFFF) << 32 | i
        try:
            l, b, e, rd = one_trial(ee, eo, host, port, direction, tid)
        except (RuntimeError, TimeoutError) as x:
            k = str(x)[-80:]
            failed[k] = failed.get(k, 0) + 1
            if sum(failed.values()) > max(2, trials // 10):
                break
            continue
        lat.append(l)
        after.append(b)
        saw[e] = saw.get(e, 0) + 1
        ready.append(rd)
    return lat, after, saw, ready, failed


def summary_ms(xs):
    return {"p50_ms": round(statistics.median(xs), 3), "p99_ms": round(pct(xs, 99), 3),
            "max_ms": round(max(xs), 3)}


def flood_phase(cfg, net, tun, ag, direction, modes, trials, direct_trials, load_streams,
                results):
    """One flood direction on one tunnel: for each mode, the cancel trials with the RTT probe
    running alongside them (so each mode is compared with the round trip of its own time)."""
    kind = "D" if direction == "download" else "U"
    ag["fe"].call("flood", name="f", host="127.0.0.1", port=PUB_FLOOD, n=load_streams, kind=kind)
    ag["fo"].call("counters")
    t0 = time.monotonic()
    time.sleep(1.5)  # let the flood fill the link
    if direction == "download":
        socks = parse_ss(net.ss(net.origin, f"( dport = :{TUNNEL_PORT} )"))
        side = "origin (sender)"
    else:
        socks = parse_ss(net.ss(net.edge, f"( sport = :{TUNNEL_PORT} )"))
        side = "edge (sender)"
    emit(bench="netns_sockets", config=cfg, flood=direction, during=modes, side=side,
         sockets=socks)
    lines = []
    try:
        for mode in modes:
            ev0 = len(tun.edge.events("cancel_ack"))
            m0 = time.monotonic()
            ag["pe"].call("ping_start", name=mode, host=net.ip_o, port=SVC_ECHO, size=64,
                          gap=0.005)
            r = None
            try:
                if mode == "direct":
                    r = cancel_trials(ag["ee"], ag["eo"], net.ip_o, SVC_VICTIM, direction,
                                      min(trials, direct_trials), f"{cfg}/{direction}/{mode}")
                else:
                    r = cancel_trials(ag["ee"], ag["eo"], "127.0.0.1", PUB_VICTIM, direction,
                                      trials, f"{cfg}/{direction}/{mode}")
            finally:  # on the way out after a failure, stop at once
                pr = ag["pe"].call("ping_stop", name=mode, min=200 if r else 0, timeout=90)
            rtts = pr["rtts"]
            rtt = None
            if rtts:
                rtt = dict(bench="netns_rtt", config=cfg, flood=direction, during=mode,
                           exchanges=len(rtts), p50_ms=round(statistics.median(rtts), 3),
                           p99_ms=round(pct(rtts, 99), 3), max_ms=round(max(rtts), 3),
                           error=pr.get("err"))
                results[("rtt", direction, mode)] = rtt
            lat, after, saw, ready, failed = r
            if not lat:
                lines.append((rtt, dict(bench="netns_cancel", config=cfg, direction=direction,
                                        mode=mode, error="no trial completed", failed=failed)))
                continue
            line = dict(bench="netns_cancel", config=cfg, direction=direction, mode=mode,
                        trials=len(lat), load_streams=load_streams, **summary_ms(lat),
                        worst_ms=[round(x, 2) for x in sorted(lat)[-5:]],
                        bytes_after_p50=int(statistics.median(after)),
                        bytes_after_max=max(after), service_saw=saw,
                        to_256k_p50_ms=round(statistics.median(ready), 1),
                        seconds=round(time.monotonic() - m0, 1))
            if failed:
                line["failed"] = failed
            if rtt:
                line["rtt_p50_ms"], line["rtt_p99_ms"] = rtt["p50_ms"], rtt["p99_ms"]
                line["minus_rtt_p50_ms"] = round(line["p50_ms"] - rtt["p50_ms"], 3)
                line["minus_rtt_p99_ms"] = round(line["p99_ms"] - rtt["p99_ms"], 3)
            if mode != "direct":
                acks = tun.edge.events("cancel_ack")[ev0:]
                ack_rtt = [int(a["rtt_ns"]) / 1e6 for a in acks if "rtt_ns" in a]
                if ack_rtt:
                    line["edge_cancel_ack"] = {
                        "acks": len(ack_rtt),
                        "rtt_p50_ms": round(statistics.median(ack_rtt), 3),
                        "rtt_p99_ms": round(pct(ack_rtt, 99), 3),
                        "paths": sorted({a.get("path") for a in acks})}
                    dropped = [int(a["dropped"]) for a in acks if "dropped" in a]
                    if dropped:
                        line["edge_cancel_ack"]["origin_dropped_p50"] = int(
                            statistics.median(dropped))
                        line["edge_cancel_ack"]["origin_dropped_max"] = max(dropped)
            lines.append((rtt, line))
    finally:
        fl = ag["fe"].call("flood_stop", name="f")
        fo = ag["fo"].call("counters")
        secs = time.monotonic() - t0
    moved = fl["bytes"] if direction == "download" else fo["U"]
    flood_mb = round(moved / secs / 1e6, 2)
    for rtt, line in lines:
        if rtt:
            rtt["flood_mb_per_s"] = flood_mb
            emit(**rtt)
        line["flood_mb_per_s"] = flood_mb
        emit(**line)
        if "error" not in line:
            results[(direction, line["mode"])] = line
    time.sleep(1.0)  # the flood's leftovers drain before the next phase


def throughput_runs(cfg, net, tun, ag, nbytes, results):
    for path in ("tunnel", "direct"):
        for direction, kind in (("download", "S"), ("upload", "K")):
            host, port = (("127.0.0.1", PUB_VICTIM) if path == "tunnel"
                          else (net.ip_o, SVC_VICTIM))
            pids = (tun.edge.pid, tun.origin.pid)
            cpu0 = sum(cpu_seconds(p) for p in pids)
            r = ag["ee"].call("throughput", host=host, port=port, kind=kind, bytes=nbytes,
                              timeout=120)
            cpu = sum(cpu_seconds(p) for p in pids) - cpu0
            line = dict(bench="netns_throughput", config=cfg, path=path, direction=direction,
                        bytes=r["bytes"], ok=r["bytes"] == nbytes, seconds=r["seconds"],
                        mb_per_s=round(r["bytes"] / r["seconds"] / 1e6, 2))
            if path == "tunnel":
                line["tunnel_cpu_s_per_gb"] = round(cpu / (r["bytes"] / 1e9), 3)
            emit(**line)
            results[("tp", path, direction)] = line
            time.sleep(0.5)


def run_config(k, spec, a, bindir, pki, key, tmp, shim):
    parts = spec.split(":")
    cc, lowat = parts[0], parts[1]
    data = parts[2] if len(parts) > 2 and parts[2] else "compiled"
    cfg_modes = parts[3].split("+") if len(parts) > 3 and parts[3] else a.modes.split(",")
    binary_cc = parts[4] if len(parts) > 4 and parts[4] else "system"
    cfg = f"{cc}/sysctl_lowat={lowat}/data_lowat={data}"
    if binary_cc != "system":
        cfg += f"/tcp_congestion={binary_cc}"
    preload = ()
    if data != "compiled":
        preload = ("env", f"LD_PRELOAD={shim}", f"ET_BENCH_DATA_LOWAT={data}")
    net = Netns(k, cc, lowat, a.rate, a.burst, a.latency)
    agents, tun, results = {}, None, {}
    try:
        emit(bench="netns_setup", config=cfg, edge_ns=net.edge, origin_ns=net.origin,
             edge_ip=net.ip_e, origin_ip=net.ip_o, commands=net.cmds, qdisc=net.qdisc,
             cc_sysctl=net.cc_sysctl, notsent_lowat_sysctl=net.lowat_sysctl,
             data_socket_lowat=("32768 (ET_DATA_LOWAT, compiled in; overrides the sysctl)"
                                if data == "compiled" else
                                f"{data} (LD_PRELOAD bench/lowat_preload.c rewrites the "
                                "engine's setsockopt; off = not set, the sysctl applies)"))
        for name, ns in (("eo", net.origin), ("fo", net.origin), ("ee", net.edge),
                         ("fe", net.edge), ("pe", net.edge)):
            agents[name] = Agent(ns, name)
        agents["eo"].call("serve", port=SVC_VICTIM)
        agents["eo"].call("serve", port=SVC_ECHO)
        agents["fo"].call("serve", port=SVC_FLOOD)
        only = set(a.only.split(","))
        for no_control in (False, True):
            modes = ["no-control"] if no_control else ["control", "direct"]
            modes = [m for m in modes if m in cfg_modes]
            want_tp = not no_control and "throughput" in only
            if not modes and not want_tp:
                continue
            tun = Tunnel(bindir, pki, key, net, tmp / f"{k}-{'nc' if no_control else 'c'}",
                         no_control, preload, binary_cc)
            try:
                # cancels first, on a tunnel as fresh as the --no-control one; then throughput
                if "cancel" in only and modes:
                    for direction in a.directions.split(","):
                        flood_phase(cfg, net, tun, agents, direction, modes, a.trials,
                                    a.direct_trials, a.load_streams, results)
                if want_tp:
                    throughput_runs(cfg, net, tun, agents, a.tp_bytes, results)
            finally:
                tun.stop()
                tun = None
    finally:
        if tun is not None:
            tun.stop()
        for ag in agents.values():
            ag.stop()
        net.delete()
    return cfg, results


def verdicts(all_results):
    """The issue's target per configuration and direction, then one line per configuration
    with the figures side by side."""
    for cfg, res in all_results:
        for direction in ("download", "upload"):
            c, d = res.get((direction, "control")), res.get((direction, "direct"))
            if c is None or "rtt_p50_ms" not in c:
                continue
            v = dict(bench="netns_target", config=cfg, direction=direction,
                     cancel_p50_minus_rtt_p50_ms=c["minus_rtt_p50_ms"],
                     cancel_p99_minus_rtt_p99_ms=c["minus_rtt_p99_ms"],
                     latency_ok=c["minus_rtt_p50_ms"] <= 1.0 and c["minus_rtt_p99_ms"] <= 1.0)
            if d is not None:
                v["bytes_after_max"] = c["bytes_after_max"]
                v["direct_bytes_after_max_plus_window"] = d["bytes_after_max"] + WINDOW
                v["bytes_ok"] = c["bytes_after_max"] <= d["bytes_after_max"] + WINDOW
            emit(**v)
    for cfg, res in all_results:
        cmp = {"bench": "netns_compare", "config": cfg}
        for direction in ("download", "upload"):
            for mode in ("control", "no-control", "direct"):
                r = res.get(("rtt", direction, mode))
                if r:
                    cmp[f"{direction}_{mode}_rtt_p50_p99_ms"] = [r["p50_ms"], r["p99_ms"]]
                x = res.get((direction, mode))
                if x:
                    cmp.setdefault(f"{direction}_flood_mb_per_s", x["flood_mb_per_s"])
                    cmp[f"{direction}_{mode}_p50_p99_ms"] = [x["p50_ms"], x["p99_ms"]]
                    cmp[f"{direction}_{mode}_bytes_after_p50_max"] = [x["bytes_after_p50"],
                                                                       x["bytes_after_max"]]
        for path in ("tunnel", "direct"):
            for direction in ("download", "upload"):
                x = res.get(("tp", path, direction))
                if x:
                    cmp[f"{path}_{direction}_mb_per_s"] = x["mb_per_s"]
        emit(**cmp)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(ROOT / "build" / "gcc"))
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--direct-trials", type=int, default=40,
                    help="at most this many direct trials (a new TCP connection into a full "
                    "drop-tail queue can take 1-2 s with CUBIC)")
    ap.add_argument("--load-streams", type=int, default=4)
    ap.add_argument("--configs", default="cubic:default,bbr:default,cubic:32768::control+direct,"
                    "bbr:32768::control+direct,bbr:default:off:control+no-control,"
                    "cubic:default:::bbr",
                    help="comma-separated CC:SYSCTL_LOWAT[:DATA_LOWAT[:MODE+MODE[:BIN_CC]]]; "
                    "SYSCTL_LOWAT 'default' leaves the namespace's own (-1); DATA_LOWAT "
                    "'compiled' (the default), 'off' or bytes, through bench/lowat_preload.c; "
                    "BIN_CC both binaries' --tcp-congestion (default 'system')")
    ap.add_argument("--directions", default="download,upload")
    ap.add_argument("--modes", default="control,no-control,direct")
    ap.add_argument("--only", default="cancel,throughput")
    ap.add_argument("--tp-bytes", type=int, default=32 << 20)
    ap.add_argument("--rate", default="100mbit")
    ap.add_argument("--burst", default="32kbit")
    ap.add_argument("--latency", default="50ms")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("netns.py: run as root (ip netns, tc)")
    def on_term(*_):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup
        sys.exit(143)

    signal.signal(signal.SIGTERM, on_term)
    avail = run(["sysctl", "-n", "net.ipv4.tcp_available_congestion_control"]).stdout.split()
    t_start = time.monotonic()
    all_results = []
    with tempfile.TemporaryDirectory(prefix="et-netns-") as d:
        tmp = pathlib.Path(d)
        bindir = tmp / "bin"
        bindir.mkdir()
        sums = {}
        for b in ("edged", "originctl"):
            shutil.copy2(pathlib.Path(a.build) / b, bindir / b)
            sums[b] = hashlib.sha256((bindir / b).read_bytes()).hexdigest()[:16]
        pki = T.Pki(tmp / "pki")
        key = T.make_token_key(tmp / "token.key")
        emit(bench="netns_run", build=a.build, sha256_16=sums, trials=a.trials,
             load_streams=a.load_streams, configs=a.configs, available_cc=avail,
             root_cc=run(["sysctl", "-n", "net.ipv4.tcp_congestion_control"]).stdout.strip(),
             kernel=os.uname().release, threads=THREADS,
             tbf=f"rate {a.rate} burst {a.burst} latency {a.latency}")
        shim = None
        specs = a.configs.split(",")
        if any(len(x.split(":")) > 2 and x.split(":")[2] not in ("", "compiled") for x in specs):
            shim = tmp / "lowat_preload.so"
            run(["cc", "-shared", "-fPIC", "-O2", "-o", str(shim),
                 str(ROOT / "bench" / "lowat_preload.c"), "-ldl"])
        for k, spec in enumerate(specs):
            cc = spec.split(":")[0]
            if cc not in avail:
                emit(bench="netns_setup", config=spec, error=f"{cc} not available: {avail}")
                continue
            all_results.append(run_config(k, spec, a, bindir, pki, key, tmp, shim))
    verdicts(all_results)
    emit(bench="netns_done", seconds=round(time.monotonic() - t_start, 1))


if __name__ == "__main__":
    main()
