"""`examples/syncbridge.service` (issue 14, point 6): a unit systemd accepts, running the
daemon in a hardened sandbox that can write only its state directory."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "examples" / "syncbridge.service"


def directives(text: str) -> dict[str, dict[str, list[str]]]:
    """A unit file's sections and their keys; a key may repeat (systemd adds them up)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, equals, value = line.partition("=")
        assert equals and current is not None, f"line {number} is not KEY=VALUE in a section"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_the_unit_runs_the_daemon_in_a_hardened_sandbox() -> None:
    unit = directives(UNIT.read_text(encoding="utf-8"))
    service = {key: values[-1] for key, values in unit["Service"].items()}
    assert set(unit) == {"Unit", "Service", "Install"}
    assert service["ExecStart"].endswith("daemon -c /etc/syncbridge/config.toml")
    assert service["ExecStart"].startswith("/")  # systemd wants an absolute path
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["EnvironmentFile"] == "/etc/syncbridge/syncbridge.env"
    assert service["DynamicUser"] == "yes" and service["StateDirectory"] == "syncbridge"
    assert service["ReadWritePaths"] == "/var/lib/syncbridge"
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "PrivateDevices"):
        assert service[key] == "yes", key
    assert service["ProtectSystem"] == "strict"
    assert service["RestrictAddressFamilies"] == "AF_INET AF_INET6 AF_UNIX"
    assert unit["Service"]["SystemCallFilter"][0] == "@system-service"
    assert service["MemoryMax"] and service["Restart"] == "on-failure"
    assert service["CapabilityBoundingSet"] == ""
    # SIGTERM to the daemon, which needs shutdown_timeout_s (30 s by default) to stop cleanly
    assert service["KillMode"] == "mixed"
    assert int(service["TimeoutStopSec"]) > 30
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    """`systemd-analyze verify` checks every directive and that ExecStart's program exists:
    pointed at this environment's `syncbridge`."""
    here = Path(sys.executable).parent / "syncbridge"
    if not here.exists():
        pytest.skip("syncbridge is not installed as a script beside this Python")
    text = UNIT.read_text(encoding="utf-8").replace("/opt/syncbridge/bin/syncbridge", str(here))
    unit = tmp_path / "syncbridge.service"
    unit.write_text(text, encoding="utf-8")
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # a bad directive is only a warning ("Unknown key …, ignoring", "Failed to parse …,
    # ignoring"): none may appear
    assert "ignoring" not in done.stderr and "Unknown" not in done.stderr, done.stderr
