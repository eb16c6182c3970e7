"""The binaries start, say their version and usage, and refuse unknown arguments."""
import subprocess


def run(args, timeout=10):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def test_versions(bindir):
    for name in ("edged", "originctl"):
        r = run([str(bindir / name), "--version"])
        assert r.returncode == 0
        assert r.stdout.startswith(f"{name} 0.")
        assert "protocol 1" in r.stdout


def test_help_goes_to_stdout(bindir):
    for name in ("edged", "originctl"):
        r = run([str(bindir / name), "--help"])
        assert r.returncode == 0
        assert r.stdout.startswith("usage:")


def test_unknown_arguments_fail_with_usage(bindir):
    for name in ("edged", "originctl"):
        r = run([str(bindir / name), "--no-such-flag"])
        assert r.returncode == 2
        assert "usage:" in r.stderr
