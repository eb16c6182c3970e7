#!/usr/bin/env python3
"""sshpeer.py: the `ssh -R` comparison peer (issue #5), one JSON line per figure.

    bench/sshpeer.py [--trials 200] [--size BYTES] [--load-streams 4]
                     [--only throughput,cancel,cancel_upload]

A private sshd (OpenSSH from Debian) on 127.0.0.1, started here with fresh keys in a temp dir,
and one `ssh -N -R` client to it (aes128-gcm@openssh.com), carry the same workloads as
bench/core.py, measured by core.py's own functions:

- throughput: one download and one upload of SIZE bytes through `ssh -R` (core.throughput_runs),
  MB/s and CPU seconds per GB of the sshd session process plus the ssh client.
- cancel: core.cancel_trials() through `ssh -R` while bench/load.py pushes LOAD_STREAMS
  downloads through a second -R forward of the same ssh connection (as core.py's load shares the
  tunnel with the victim).
- cancel_upload: core.cancel_upload_trials() through `ssh -R` while bench/load.py pushes
  LOAD_STREAMS uploads through the second forward: the victim uploads until the service has read
  1 MiB, then resets; latency until the service's recv reports it, and what it still read after.
- cancel_signal: a few extra trials whose service also watches its socket, to tell whether the
  client's reset reaches the service as a reset or only as a FIN.

With -R the per-connection work happens in sshd's per-connection child and in the ssh client.
For a root login OpenSSH 9.2 skips the post-auth privilege split (privsep_postauth: uid 0), so
the tree is just the listener -> `sshd: root` (which holds the -R listening sockets and every
forwarded connection; no `[priv]`/`root@notty` pair, and no session title since -N opens no
session). It is found through /proc: children files when the kernel has them (this one has no
CONFIG_PROC_CHILDREN), otherwise every /proc/PID/stat's parent PID.
Everything runs on 127.0.0.1 and is stopped by PID.
"""
import argparse
import errno
import os
import pathlib
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import core  # noqa: E402
from core import T, cpu_seconds, emit, pct  # noqa: E402

SSHD = "/usr/sbin/sshd"
SSH = "/usr/bin/ssh"
SSH_KEYGEN = "/usr/bin/ssh-keygen"
CIPHER = "aes128-gcm@openssh.com"
MODE = "ssh -R"
START_TIMEOUT = 15.0
STOP_GRACE = 5.0


# ---------------------------------------------------------------------------------------------
# /proc helpers


def _ppid_and_name(pid):
    try:
        s = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None, None
    name = s[s.index("(") + 1: s.rindex(")")]
    return int(s.rsplit(")", 1)[1].split()[1]), name


def children(pid):
    """Direct children of pid: /proc/PID/task/*/children if the kernel has it, else a scan."""
    kids, have_file = [], False
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            try:
                kids += [int(x) for x in pathlib.Path(f"/proc/{pid}/task/{t}/children").read_text().split()]
                have_file = True
            except OSError:
                pass
    except OSError:
        return []
    if have_file:
        return kids
    for d in os.listdir("/proc"):
        if d.isdigit() and _ppid_and_name(d)[0] == pid:
            kids.append(int(d))
    return kids


def descendants(pid, limit=64):
    out, todo = [], [pid]
    for _ in range(limit):
        if not todo:
            break
        p = todo.pop()
        for k in children(p):
            out.append(k)
            todo.append(k)
    return out


def cmdline(pid):
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def cpu_or_zero(pid):
    try:
        return cpu_seconds(pid)
    except (OSError, IndexError, ValueError):
        return 0.0


def listening(port, owners=None):
    """True once 127.0.0.1:port is in LISTEN state, and if owners (a callable giving PIDs) is
    set, held by one of them (so a stranger's listener on the port does not count). No probe
    connection: a probe through -R would open a channel to the local service."""
    want = f"0100007F:{port:04X}"
    inodes = set()
    for line in pathlib.Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[1] == want and f[3] == "0A":
            inodes.add(f"socket:[{f[9]}]")
    if not inodes or owners is None:
        return bool(inodes)
    for pid in owners():
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                        return True
                except OSError:
                    pass
        except OSError:
            pass
    return False


def stop_pid(proc_or_pid, grace=STOP_GRACE):
    """SIGTERM, wait up to grace, SIGKILL. Accepts a Popen or a bare PID (not our child)."""
    if isinstance(proc_or_pid, subprocess.Popen):
        p = proc_or_pid
        if p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(grace)
        return
    pid = proc_or_pid
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    for _ in range(int(grace / 0.02) + 10):
        if not os.path.exists(f"/proc/{pid}") or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------------------------------------
# the tunnel


class SshTunnel:
    """`ssh -R 127.0.0.1:public_port:127.0.0.1:local_port` through a private sshd on loopback.

    more: extra (public, local) forwards on the same ssh connection.
    Attributes once entered: sshd_pid (listener), ssh_pid (client), session_pid (sshd's
    post-auth child that carries the channels), sshd_pids (every sshd descendant), port.
    """

    def __init__(self, public_port, local_port, more=()):
        self.forwards = [(public_port, local_port)] + list(more)
        self.tmp = None
        self.sshd = None
        self.ssh = None
        self.sshd_pids = []
        self.session_pid = None

    @property
    def sshd_pid(self):
        return self.sshd.pid

    @property
    def ssh_pid(self):
        return self.ssh.pid

    def __enter__(self):
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _keygen(self, path, comment):
        subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                       check=True, stdin=subprocess.DEVNULL, timeout=30)

    def _start(self):
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="et-sshpeer-"))
        d = self.tmp
        host_key, client_key = d / "host_ed25519", d / "client_ed25519"
        self._keygen(host_key, "sshpeer-host")
        self._keygen(client_key, "sshpeer-client")
        (d / "authorized_keys").write_text((d / "client_ed25519.pub").read_text())
        os.chmod(d / "authorized_keys", 0o600)
        # sshd refuses to start without its privilege-separation directory (systemd's
        # RuntimeDirectory normally makes it; nothing does in a container).
        if not os.path.isdir("/run/sshd"):
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        (self.port,) = T.free_ports(1)
        cfg = d / "sshd_config"
        cfg.write_text("\n".join([
            "ListenAddress 127.0.0.1",
            f"Port {self.port}",
            f"HostKey {host_key}",
            f"AuthorizedKeysFile {d}/authorized_keys",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            f"PidFile {d}/sshd.pid",
            "AllowTcpForwarding yes",
            "GatewayPorts no",
            "X11Forwarding no",
            "PrintMotd no",
            "UseDNS no",
            f"Ciphers {CIPHER}",
            "LogLevel ERROR",
            "",
        ]))
        self.sshd_log = open(d / "sshd.log", "wb")
        self.sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stdin=subprocess.DEVNULL,
                                     stdout=self.sshd_log, stderr=subprocess.STDOUT)
        self._wait(lambda: listening(self.port, lambda: [self.sshd.pid]), self.sshd,
                   "sshd listening")

        cmd = [SSH, "-N", "-T", "-F", "/dev/null",
               "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=0",
               "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "Compression=no",
               "-o", "LogLevel=ERROR", "-c", CIPHER, "-i", str(client_key), "-p", str(self.port)]
        for pub, loc in self.forwards:
            cmd += ["-R", f"127.0.0.1:{pub}:127.0.0.1:{loc}"]
        cmd.append("root@127.0.0.1")
        self.ssh_cmd = cmd
        self.ssh_log = open(d / "ssh.log", "wb")
        self.ssh = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.ssh_log,
                                    stderr=subprocess.STDOUT)
        for pub, _ in self.forwards:
            self._wait(lambda: listening(pub, lambda: descendants(self.sshd.pid)), self.ssh,
                       f"-R forward on 127.0.0.1:{pub}")
        self._find_session()

    def _wait(self, pred, proc, what):
        deadline = time.monotonic() + START_TIMEOUT
        for _ in range(int(START_TIMEOUT / 0.02) + 10):
            if pred():
                return
            if proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        raise RuntimeError(f"{what}: not ready (exit={proc.poll()}); sshd log: "
                           f"{self._log('sshd.log')!r}; ssh log: {self._log('ssh.log')!r}")

    def _log(self, name):
        try:
            return (self.tmp / name).read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def _find_session(self):
        """The connection's process that owns the channels: the leaf under the listener
        (`sshd: root` for a root login; `sshd: USER@notty` under a `[priv]` monitor for
        another user). Every descendant is kept for the 'other' CPU figure."""
        self.sshd_pids = descendants(self.sshd.pid)
        leaves = [p for p in self.sshd_pids if not children(p)]
        named = [p for p in leaves if "@notty" in cmdline(p)]
        self.session_pid = (named or leaves or [None])[0]
        if self.session_pid is None:
            raise RuntimeError("no sshd session child found")

    def process_table(self):
        return {str(p): cmdline(p) for p in [self.sshd.pid] + self.sshd_pids + [self.ssh.pid]}

    def close(self):
        # Client first (its connection's end makes the session exit), then every sshd
        # descendant we saw, then the listener; all by PID.
        if self.ssh is not None:
            stop_pid(self.ssh)
        if self.sshd is not None:
            for p in reversed(descendants(self.sshd.pid) or self.sshd_pids):
                stop_pid(p)
            stop_pid(self.sshd)
        for f in ("ssh_log", "sshd_log"):
            if getattr(self, f, None) is not None:
                getattr(self, f).close()
        if self.tmp is not None:
            for p in sorted(self.tmp.iterdir(), reverse=True):
                p.unlink()
            self.tmp.rmdir()
            self.tmp = None


# ---------------------------------------------------------------------------------------------
# benches


class _Pids:
    """What core.throughput_runs() wants: pids() -> (two PIDs whose CPU it sums)."""

    def __init__(self, t):
        self.t = t

    def pids(self):
        return self.t.session_pid, self.t.ssh_pid


def bench_throughput(size):
    pub, svc = T.free_ports(2)
    with SshTunnel(pub, svc) as t:
        others = [p for p in t.sshd_pids if p != t.session_pid] + [t.sshd_pid]
        snap = {}

        def take():
            snap.update(session=cpu_or_zero(t.session_pid), client=cpu_or_zero(t.ssh_pid),
                        other=sum(cpu_or_zero(p) for p in others))

        def emit_ssh(**kv):
            before = dict(snap)
            take()
            gb = kv["bytes"] / 1e9
            out = {"bench": kv.pop("bench"), "mode": MODE, "cipher": CIPHER}
            out.update(kv)
            out["ssh_cpu_s_per_gb"] = out.pop("tunnel_cpu_s_per_gb")
            out["sshd_session_cpu_s"] = round(snap["session"] - before["session"], 3)
            out["ssh_client_cpu_s"] = round(snap["client"] - before["client"], 3)
            out["sshd_other_cpu_s"] = round(snap["other"] - before["other"], 3)  # listener (+ monitor if any)
            out["sshd_session_cpu_s_per_gb"] = round(out["sshd_session_cpu_s"] / gb, 3)
            out["ssh_client_cpu_s_per_gb"] = round(out["ssh_client_cpu_s"] / gb, 3)
            emit(**out)

        take()
        saved = core.emit
        core.emit = emit_ssh
        try:
            core.throughput_runs(_Pids(t), pub, svc, size)
        finally:
            core.emit = saved


def _with_load(load_streams, load_seconds, fn, direction="download"):
    """Run fn(pub, srv, tunnel) with LOAD_STREAMS downloads (or uploads) through the same ssh
    connection."""
    pub, svc, load_pub, load_svc = T.free_ports(4)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", svc))
    srv.listen(64)
    try:
        with SshTunnel(pub, svc, more=[(load_pub, load_svc)]) as t:
            load = subprocess.Popen([sys.executable, str(ROOT / "bench" / "load.py"),
                                     str(load_pub), str(load_svc), str(load_streams),
                                     str(load_seconds), direction],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
            try:
                load.stdout.readline()  # ready
                time.sleep(1.0)  # let the load saturate the tunnel
                return fn(pub, srv, t)
            finally:
                stop_pid(load, 10)
                load.stdout.close()
    finally:
        srv.close()


def bench_cancel(trials, load_streams, signal_trials):
    def run(pub, srv, t):
        r = core.cancel_trials(pub, srv, trials, MODE)
        sig = signal_probe(pub, srv, signal_trials) if signal_trials else None
        return r, sig

    r, sig = _with_load(load_streams, trials * 0.2 + 30 + signal_trials * 0.5, run)
    if r is not None:
        lat, after = r
        emit(bench="cancel", mode=MODE, trials=len(lat), load_streams=load_streams,
             p50_ms=round(statistics.median(lat), 3), p99_ms=round(pct(lat, 99), 3),
             max_ms=round(max(lat), 3), worst_ms=[round(x, 2) for x in sorted(lat)[-5:]],
             bytes_after_p50=int(statistics.median(after)), bytes_after_max=max(after),
             latencies_ms=[round(x, 3) for x in lat])
    if sig:
        emit(**sig)


def bench_cancel_upload(trials, load_streams):
    """core.cancel_upload_trials through `ssh -R` while LOAD_STREAMS uploads flood the same ssh
    connection toward the service side (as core.py's upload cancel does to the tunnel)."""
    r = _with_load(load_streams, trials * 0.2 + 30,
                   lambda pub, srv, t: core.cancel_upload_trials(pub, srv, trials, MODE),
                   direction="upload")
    if r is None:
        return
    lat, after, saw = r
    emit(bench="cancel", direction="upload", mode=MODE, trials=len(lat),
         load_streams=load_streams, p50_ms=round(statistics.median(lat), 3),
         p99_ms=round(pct(lat, 99), 3), max_ms=round(max(lat), 3),
         worst_ms=[round(x, 2) for x in sorted(lat)[-5:]],
         bytes_after_p50=int(statistics.median(after)), bytes_after_max=max(after),
         service_saw=saw, latencies_ms=[round(x, 3) for x in lat])


def signal_probe(pub_port, svc_srv, trials):
    """Like core.cancel_trials, but the service also polls its socket for reads, so it can tell
    a FIN (recv() == b"") from a reset (ECONNRESET) and when each arrived."""
    blob = b"\x33" * (256 << 10)
    fin_ms, err_ms, errs, fin_first = [], [], {}, 0
    for _ in range(trials):
        res = {}
        done = threading.Event()

        def service():
            c, _ = svc_srv.accept()
            c.setblocking(False)
            deadline = time.monotonic() + 15
            try:
                for _ in range(1 << 22):
                    if time.monotonic() > deadline:
                        res["err"] = "timeout"
                        break
                    r, w, _ = select.select([c] if "fin_t" not in res else [], [c], [], 1.0)
                    if r:
                        try:
                            if c.recv(4096) == b"":
                                res["fin_t"] = time.monotonic_ns()
                        except OSError as e:
                            res["err_t"], res["err"] = time.monotonic_ns(), errno.errorcode[e.errno]
                            res["via"] = "recv"
                            break
                    if w:
                        try:
                            c.send(blob)
                        except BlockingIOError:
                            pass
                        except OSError as e:
                            res["err_t"], res["err"] = time.monotonic_ns(), errno.errorcode[e.errno]
                            res["via"] = "send"
                            break
            finally:
                c.close()
                done.set()

        th = threading.Thread(target=service, daemon=True)
        th.start()
        c = socket.create_connection(("127.0.0.1", pub_port), timeout=10)
        got = 0
        for _ in range(1 << 16):
            k = len(c.recv(1 << 20))
            if k == 0:
                break
            got += k
            if got >= (1 << 20):
                break
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        t0 = time.monotonic_ns()
        c.close()
        if not done.wait(20):
            break
        th.join(5)
        key = f'{res.get("err", "none")} via {res.get("via", "-")}'
        errs[key] = errs.get(key, 0) + 1
        if "fin_t" in res:
            fin_ms.append((res["fin_t"] - t0) / 1e6)
            if "err_t" in res and res["fin_t"] <= res["err_t"]:
                fin_first += 1
        if "err_t" in res:
            err_ms.append((res["err_t"] - t0) / 1e6)
    out = {"bench": "cancel_signal", "mode": MODE, "trials": trials, "service_saw": errs,
           "fin_seen": len(fin_ms), "fin_before_error": fin_first}
    if fin_ms:
        out.update(fin_p50_ms=round(statistics.median(fin_ms), 3), fin_max_ms=round(max(fin_ms), 3))
    if err_ms:
        out.update(error_p50_ms=round(statistics.median(err_ms), 3),
                   error_max_ms=round(max(err_ms), 3))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="throughput,cancel,cancel_upload")
    ap.add_argument("--size", type=int, default=2 << 30)
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--load-streams", type=int, default=4)
    ap.add_argument("--signal-trials", type=int, default=20,
                    help="extra trials telling a FIN from a reset at the service (0: none)")
    a = ap.parse_args()
    only = set(a.only.split(","))
    for exe in (SSHD, SSH, SSH_KEYGEN):
        if not os.access(exe, os.X_OK):
            sys.exit(f"{exe} missing: apt-get install -y openssh-server openssh-client")
    if "throughput" in only:
        bench_throughput(a.size)
    if "cancel" in only:
        bench_cancel(a.trials, a.load_streams, a.signal_trials)
    if "cancel_upload" in only:
        bench_cancel_upload(a.trials, a.load_streams)


if __name__ == "__main__":
    main()
