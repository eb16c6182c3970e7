"""The README's run command: scripts/dev.sh starts edged --dev, a demo origin and originctl, and
shows the demo page fetched through the tunnel (ET_DEV_ONCE=1 makes it stop after that)."""
import os
import pathlib
import subprocess

from tunnel import free_ports

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_dev_script_shows_a_page_through_the_tunnel():
    http_port, origin_port, tunnel_port = free_ports(3)
    env = dict(os.environ, ET_DEV_ONCE="1", ET_DEV_HTTP_PORT=str(http_port),
               ET_DEV_ORIGIN_PORT=str(origin_port), ET_DEV_TUNNEL=f"127.0.0.1:{tunnel_port}")
    r = subprocess.run([str(ROOT / "scripts" / "dev.sh")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "\noriginctl connect --edge " in r.stdout
    assert "--pin sha256:" in r.stdout
    assert "Hello through the tunnel" in r.stdout, r.stdout[-2000:]
