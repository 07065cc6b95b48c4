"""Run the xArm controller emulator and a client together in a private network namespace.

    v2r sim emulator -- python my_client.py              # CLI
    python -m video2reward.sim.emulator_netns -- python my_client.py
    proc = run_with_emulator(["python", "client.py"])    # from Python (tests, benchmarks)

The xArm SDK connects to fixed ports (502, 30001-30003), and binding 502 needs root, so the
emulator gets a network namespace of its own: ``unshare -rn`` (a user namespace maps you to
root inside it; no real privileges needed) plus ``ip link set lo up``. Everything that talks
to the emulator, including ROS 2 nodes that must discover each other over loopback, runs as
the client command inside the same namespace. Parallel runs never collide: each has its own
loopback. Inside, the launcher starts ``python -m video2reward.sim.xarm_emulator``, waits for
its probe port, runs the client, then stops the emulator and returns the client's exit code.

A client that tests losing the controller finds the emulator's pid in ``$V2R_EMULATOR_PID``
(``EMULATOR_PID_ENV``), kills it, and starts a fresh one with ``start_emulator()`` (same
namespace, same ports; the client then stops that one itself).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

_INSIDE_ENV = "V2R_EMULATOR_NETNS"
EMULATOR_PID_ENV = "V2R_EMULATOR_PID"
PROBE_PORT = 30010


class NetnsUnavailableError(RuntimeError):
    """unshare/ip are missing or user namespaces are disabled on this machine."""


def run_with_emulator(
    client_argv: Sequence[str],
    emulator_argv: Sequence[str] = (),
    timeout_s: float = 120.0,
    env: dict[str, str] | None = None,
    capture: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``client_argv`` next to a fresh emulator in a new network namespace."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        raise NetnsUnavailableError("need `unshare` (util-linux) and `ip` (iproute2)")
    cmd = ["unshare", "-rn", sys.executable, "-m", "video2reward.sim.emulator_netns",
           *emulator_argv, "--", *client_argv]
    full_env = dict(os.environ if env is None else env)
    full_env[_INSIDE_ENV] = "1"
    return subprocess.run(cmd, env=full_env, timeout=timeout_s, text=True,
                          capture_output=capture, check=False)


def run_json_scenario(script: str, timeout_s: float, ros_domain_id: str) -> dict[str, Any]:
    """Run ``script`` (a scenario that prints one JSON line last) beside a fresh emulator on an
    isolated localhost ROS graph; its result, or RuntimeError with everything it printed."""
    env = dict(os.environ, ROS_DOMAIN_ID=ros_domain_id, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    proc = run_with_emulator([sys.executable, script], timeout_s=timeout_s, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"scenario {script} failed:\n{proc.stdout}\n{proc.stderr}")
    out: dict[str, Any] = json.loads(lines[-1])
    return out


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"emulator exited with code {proc.returncode} before it was ready")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"emulator not ready after {timeout_s} s")


def start_emulator(
    emulator_argv: Sequence[str] = (), timeout_s: float = 30.0
) -> subprocess.Popen[bytes]:
    """Start an emulator in this (private) namespace and wait until its probe port answers."""
    emu = subprocess.Popen([sys.executable, "-m", "video2reward.sim.xarm_emulator", *emulator_argv])
    try:
        _wait_for_port(PROBE_PORT, emu, timeout_s=timeout_s)
    except BaseException:
        emu.kill()
        raise
    return emu


def _inside(emulator_argv: list[str], client_argv: list[str]) -> int:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    emu = start_emulator(emulator_argv)
    try:
        if not client_argv:
            client_argv = [os.environ.get("SHELL", "/bin/sh")]
        env = dict(os.environ, **{EMULATOR_PID_ENV: str(emu.pid)})
        return subprocess.run(client_argv, check=False, env=env).returncode
    finally:
        emu.terminate()
        try:
            emu.wait(timeout=5)
        except subprocess.TimeoutExpired:
            emu.kill()


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    split = args.index("--") if "--" in args else len(args)
    emulator_argv, client_argv = args[:split], args[split + 1 :]
    if os.environ.get(_INSIDE_ENV) == "1":
        return _inside(emulator_argv, client_argv)
    try:
        proc = run_with_emulator(client_argv, emulator_argv, timeout_s=1e9, capture=False)
        return proc.returncode
    except NetnsUnavailableError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
