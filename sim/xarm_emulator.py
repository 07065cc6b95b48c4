"""xArm controller emulator: the xArm SDK's own wire protocol, served from the MuJoCo twin.

    # Ports 502 and 30001-30003 are fixed by the SDK, so run it in a private network namespace
    # (no root needed). One command starts the emulator and a client inside one namespace:
    v2r sim emulator -- python my_client.py
    # which is sim.emulator_netns; by hand it is:
    unshare -rn sh -c 'ip link set lo up; python -m video2reward.sim.xarm_emulator &
                       sleep 3; python my_client.py'

    # my_client.py, unchanged from the lab robot except the address:
    from xarm.wrapper import XArmAPI
    arm = XArmAPI("127.0.0.1"); arm.motion_enable(True); arm.set_mode(1); arm.set_state(0)
    arm.set_servo_cartesian([350, 0, 200, 180, 0, 0])      # mm and degrees, tool down

The emulated subset is what ``robot.xarm_driver`` uses: version and serial number, motion
enable, mode, state, error/warning codes and clearing, TCP offset, set_position (linear moves
in position mode, with motion-finished feedback), servo-cartesian (mode 1), get_position and
joint angles, emergency stop (set_state(4)), the report streams on 30001/30002/30003, and the
xArm Gripper's Modbus-RTU registers on the tool RS-485. Targets the xArm5 cannot reach give
controller error 21 (kinematic error), joint-limit violations 23, a servo jump larger than
``servo_max_step_mm`` 24 (speed exceeds limit), and arm contact above ``collision_force_n``
31 (collision); like the real controller, an error stops the arm (state 4) and every motion
command is refused until the error is cleared, the motors re-enabled and the state set to 0.

A small JSON-lines probe on 127.0.0.1:``probe_port`` (not part of the xArm protocol) lets tests
read the twin's true joint angles, the log of every motion command received and of every stop
of the arm (``log``, monotonic times), record the true TCP at every control tick
(``trace_start`` / ``trace``), and inject faults: a controller
error (``inject_error``), report streams that fall silent (``stall_reports``), requests
answered only after a pause (``stall_replies``: a starved or busy controller), dropped
connections (``drop_connections``). Killing the process is the remaining fault: see
``sim.emulator_netns`` (``EMULATOR_PID_ENV``, ``start_emulator``). The SDK calls
``socket.setdefaulttimeout(1)`` process-wide, so the emulator always runs in its own process.

This module is the socket server and the probe; the controller's state machine is
``sim.xarm_controller_model`` and the protocol's numbers and framing ``sim.xarm_protocol``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import socket
import struct
import threading
import time
from typing import Any

from video2reward.sim.twin import XArm5Twin
from video2reward.sim.xarm_controller_model import EmulatedController, EmulatorConfig
from video2reward.sim.xarm_protocol import (
    CONTROL_PORT,
    HEADER_LEN,
    PROT_HEARTBEAT,
    REPORT_NORMAL_PORT,
    REPORT_REAL_PORT,
    REPORT_RICH_PORT,
    pack_frame,
)

log = logging.getLogger("xarm_emulator")


class EmulatorServer:
    """Sockets and threads around an :class:`EmulatedController`; ``with`` starts and stops it."""

    def __init__(self, config: EmulatorConfig | None = None, twin: XArm5Twin | None = None):
        self.config = config or EmulatorConfig()
        self.controller = EmulatedController(self.config, twin)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listeners: list[socket.socket] = []
        self._conns: list[socket.socket] = []  # client connections (drop_connections)
        self._reports_paused_until = 0.0  # monotonic; report streams send nothing before it
        self._replies_paused_until = 0.0  # monotonic; requests wait for it (a busy controller)

    def __enter__(self) -> EmulatorServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        slow, fast = self.config.rich_report_hz, self.config.real_report_hz
        self._listen(CONTROL_PORT, self._serve_control)
        self._listen(REPORT_NORMAL_PORT, lambda s: self._serve_report(s, "normal", slow))
        self._listen(REPORT_RICH_PORT, lambda s: self._serve_report(s, "rich", slow))
        self._listen(REPORT_REAL_PORT, lambda s: self._serve_report(s, "real", fast))
        self._spawn(self._control_loop)
        self._listen(self.config.probe_port, self._serve_probe)  # last: its port says "ready"

    def close(self) -> None:
        self._stop.set()
        for s in self._listeners:
            s.close()
        for t in self._threads:
            t.join(timeout=1.0)
        self.controller.twin.close()

    def wait(self) -> None:
        while not self._stop.wait(0.5):
            pass

    def _spawn(self, target: Any, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        self._threads.append(t)

    def _listen(self, port: int, serve: Any) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.config.host, port))
        s.listen(4)
        s.settimeout(0.5)
        self._listeners.append(s)

        def accept_loop() -> None:
            while not self._stop.is_set():
                try:
                    conn, _ = s.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if port != self.config.probe_port:
                    self._conns.append(conn)
                self._spawn(serve, conn)

        self._spawn(accept_loop)

    def _control_loop(self) -> None:
        ctrl = self.controller
        dt = 1.0 / self.config.control_hz
        t_next = time.monotonic()
        while not self._stop.is_set():
            t_next += dt
            with ctrl.lock:
                ctrl.tick(dt)
            lag = time.monotonic() - t_next
            if lag > 0.25:  # far behind (machine busy): drop the backlog, keep real time
                t_next = time.monotonic()
            self._stop.wait(max(0.0, t_next - time.monotonic()))

    def _serve_control(self, conn: socket.socket) -> None:
        ctrl = self.controller
        conn.settimeout(0.05)  # also the latency of motion-finished feedback between requests
        buf = b""
        with conn:
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    buf += chunk
                except TimeoutError:
                    chunk = b""
                except OSError:
                    return
                if chunk:  # a stalled controller handles (and answers) nothing until it ends
                    self._stop.wait(max(0.0, self._replies_paused_until - time.monotonic()))
                out = b""
                while len(buf) >= HEADER_LEN:
                    length = struct.unpack(">H", buf[4:6])[0]
                    if len(buf) < HEADER_LEN + length:
                        break
                    frame, buf = buf[: HEADER_LEN + length], buf[HEADER_LEN + length :]
                    trans_id, prot_id = struct.unpack(">HH", frame[:4])
                    if prot_id == PROT_HEARTBEAT or length < 1:  # the SDK's heartbeat: no reply
                        continue
                    fn, payload = frame[6], frame[7:]
                    with ctrl.lock:
                        try:
                            data = ctrl.handle(fn, payload, trans_id)
                        except (struct.error, IndexError) as e:
                            log.warning("malformed request fn=%d: %s", fn, e)
                            data = None
                            flags = 0x08  # INVALID
                        else:
                            flags = ctrl.state_flags()
                    if data is None:
                        data = b""
                    body = bytes([fn, flags]) + data
                    out += pack_frame(trans_id, prot_id, body)
                with ctrl.lock:
                    pending, ctrl.outbox = ctrl.outbox, []
                out += b"".join(pending)
                if out:
                    try:
                        conn.sendall(out)
                    except OSError:
                        return

    def _serve_report(self, conn: socket.socket, kind: str, hz: float) -> None:
        period = 1.0 / hz
        with conn:
            t_next = time.monotonic()
            while not self._stop.is_set():
                with self.controller.lock:
                    frame = self.controller.report(kind)
                try:
                    if time.monotonic() >= self._reports_paused_until:
                        conn.sendall(frame)
                except OSError:
                    return
                t_next += period
                self._stop.wait(max(0.0, t_next - time.monotonic()))

    def _serve_probe(self, conn: socket.socket) -> None:
        ctrl = self.controller
        with conn, conn.makefile("rwb") as f:
            for line in f:
                req = json.loads(line)
                with ctrl.lock:
                    reply = self._probe(req)
                f.write((json.dumps(reply) + "\n").encode())
                f.flush()

    def _probe(self, req: dict[str, Any]) -> dict[str, Any]:
        ctrl = self.controller
        op = req.get("op")
        if op == "state":
            return {
                "joint_pos": ctrl.twin.joint_pos().tolist(),
                "tcp_pose": ctrl.tcp_pose().tolist(),
                "gripper_pos": ctrl.gripper_pos,
                "state": ctrl.state, "mode": ctrl.mode, "error_code": ctrl.error_code,
                "motors_enabled": ctrl.motors_enabled, "sim_time_s": ctrl.twin.time_s,
            }
        if op == "log":
            last = -int(req.get("last", 100000))
            return {"motion_log": ctrl.motion_log[last:], "stop_log": ctrl.stop_log[last:]}
        if op == "clear_log":
            ctrl.motion_log.clear()
            ctrl.stop_log.clear()
            return {"ok": True}
        if op == "inject_error":
            ctrl.raise_error(int(req["code"]), "injected by the test probe")
            return {"ok": True}
        if op == "stall_reports":  # the report streams fall silent; connections stay open
            self._reports_paused_until = time.monotonic() + float(req["seconds"])
            return {"ok": True}
        if op == "stall_replies":  # requests are answered only after this (a starved process)
            self._replies_paused_until = time.monotonic() + float(req["seconds"])
            return {"ok": True}
        if op == "drop_connections":  # as if the cable were pulled and put back
            conns, self._conns = self._conns, []
            for c in conns:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
                c.close()
            return {"ok": True, "dropped": len(conns)}
        if op == "trace_start":  # record the true TCP at every control tick from now on
            ctrl.tcp_trace = []
            return {"ok": True}
        if op == "trace":  # the ticks recorded since the last call (the trace keeps going)
            trace = ctrl.tcp_trace or []
            if ctrl.tcp_trace is not None:
                ctrl.tcp_trace = []
            return {"trace": trace}
        return {"error": f"unknown op {op!r}"}


class EmulatorProbe:
    """Client of the emulator's JSON-lines probe (tests and benchmarks, same namespace)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 30010, timeout_s: float = 5.0):
        self._sock = socket.create_connection((host, port), timeout=timeout_s)
        self._f = self._sock.makefile("rwb")

    def call(self, op: str, **kw: Any) -> dict[str, Any]:
        self._f.write((json.dumps({"op": op, **kw}) + "\n").encode())
        self._f.flush()
        reply: dict[str, Any] = json.loads(self._f.readline())
        return reply

    def close(self) -> None:
        self._f.close()
        self._sock.close()

    def __enter__(self) -> EmulatorProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="xArm controller emulator backed by the MuJoCo twin. "
                                 "Binds 127.0.0.1:502 and 30001-30003: run it in a private "
                                 "network namespace (see `v2r sim emulator`).")
    ap.add_argument("--probe-port", type=int, default=EmulatorConfig.probe_port)
    ap.add_argument("--servo-max-step-mm", type=float, default=EmulatorConfig.servo_max_step_mm)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="[emulator] %(levelname)s %(message)s")
    cfg = EmulatorConfig(probe_port=args.probe_port, servo_max_step_mm=args.servo_max_step_mm)
    server = EmulatorServer(cfg)
    signal.signal(signal.SIGTERM, lambda *_: server._stop.set())
    try:
        server.start()
    except PermissionError:
        print("error: cannot bind port 502; run inside `unshare -rn` (see `v2r sim emulator`)")
        return 2
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
