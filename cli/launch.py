"""``v2r launch``: run a ROS 2 XML launch file without ``ros2 launch`` (CI, machines without ROS).

    v2r launch launch/sim.launch.xml task:=reach
    v2r launch sim.launch.xml --show-args        # the argument table with defaults
    v2r launch sim.launch.xml --print            # the node command lines, nothing started

The lab runs the same files with ``ros2 launch video2reward <file>``. This launcher reads the
subset of ROS 2's XML frontend the project's files use and refuses anything else by name:

- ``<arg name default description>``, ``<let name value>``
- ``<node pkg exec name namespace output respawn respawn_delay on_exit if unless>`` with
  ``<param name value>``, ``<param from>`` (a parameters YAML) and ``<remap from to>``
- ``<group if unless>``, ``<include file>`` with ``<arg name value>``
- substitutions ``$(var NAME)``, ``$(env NAME [default])``, ``$(find-pkg-share video2reward)``

Each node is its own process (``<exec> --ros-args -r __node:=NAME -p k:=v ...``). Ctrl-C
sends SIGINT to every node, then SIGTERM/SIGKILL after a grace period. A node that exits with
an error (or any node with ``on_exit="shutdown"``) shuts the graph down and the launcher exits
non-zero, naming it; ``respawn="true"`` restarts a node instead. A node with
``on_exit="shutdown"`` that exits cleanly (0) ends the launch with 0: its work is done.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

PACKAGE = "video2reward"
_SUBST = re.compile(r"\$\(([^()]*)\)")


class LaunchError(ValueError):
    """A launch file or argument this launcher cannot run as written."""


@dataclass(frozen=True)
class ArgSpec:
    name: str
    default: str | None
    description: str


@dataclass
class NodeSpec:
    package: str
    executable: str
    name: str
    namespace: str = ""
    params: list[tuple[str, str]] = field(default_factory=list)
    param_files: list[str] = field(default_factory=list)
    remaps: list[tuple[str, str]] = field(default_factory=list)
    respawn: bool = False
    respawn_delay_s: float = 1.0
    shutdown_on_exit: bool = False

    def command(self) -> list[str]:
        cmd = [*resolve_executable(self.package, self.executable), "--ros-args"]
        cmd += ["-r", f"__node:={self.name}"]
        if self.namespace:
            cmd += ["-r", f"__ns:=/{self.namespace.strip('/')}"]
        for f in self.param_files:
            cmd += ["--params-file", f]
        for k, v in self.params:
            cmd += ["-p", f"{k}:={v if v != '' else repr('')}"]  # YAML '' is the empty string
        for a, b in self.remaps:
            cmd += ["-r", f"{a}:={b}"]
        return cmd


def package_share(package: str) -> Path:
    """The package's share directory: a colcon/pip install's share/, else the source tree."""
    if package != PACKAGE:
        raise LaunchError(f"$(find-pkg-share {package}): only {PACKAGE} is known to v2r launch")
    installed = Path(sys.prefix) / "share" / PACKAGE
    source = Path(__file__).resolve().parents[1]
    for candidate in (source, installed):  # an editable checkout wins over stale copies
        if (candidate / "launch").is_dir():
            return candidate
    raise LaunchError(f"no {PACKAGE} share directory (looked in {source}, {installed})")


def resolve_executable(package: str, executable: str) -> list[str]:
    """The command that runs ``executable`` of ``package`` (a console script of this project)."""
    if package != PACKAGE:
        raise LaunchError(f"node pkg={package!r}: v2r launch only runs {PACKAGE} executables")
    # Every copy of the distribution on the path counts: a stale egg-info in a source tree
    # must not hide executables the installed copy has.
    scripts: dict[str, str] = {}
    for dist in metadata.distributions():
        if dist.metadata["Name"] == PACKAGE:
            for ep in dist.entry_points.select(group="console_scripts"):
                scripts.setdefault(ep.name, ep.value)
    if executable not in scripts:
        raise LaunchError(f"{PACKAGE} has no executable {executable!r}; it has {sorted(scripts)}")
    script = Path(sysconfig.get_path("scripts")) / executable
    if script.exists():
        return [str(script)]
    module, func = scripts[executable].split(":")
    return [sys.executable, "-c", f"import sys; from {module} import {func}; sys.exit({func}())"]


class _Context:
    def __init__(self, variables: dict[str, str]):
        self.vars = dict(variables)

    def subst(self, text: str | None, where: str) -> str:
        if text is None:
            return ""

        def one(m: re.Match[str]) -> str:
            parts = m.group(1).split()
            if not parts:
                raise LaunchError(f"{where}: empty substitution $()")
            kind, rest = parts[0], parts[1:]
            if kind == "var" and len(rest) == 1:
                if rest[0] not in self.vars:
                    raise LaunchError(f"{where}: $(var {rest[0]}) is not a declared argument")
                return self.vars[rest[0]]
            if kind == "env" and len(rest) in (1, 2):
                value = os.environ.get(rest[0], rest[1] if len(rest) == 2 else None)
                if value is None:
                    raise LaunchError(f"{where}: environment variable {rest[0]} is not set")
                return value
            if kind == "find-pkg-share" and len(rest) == 1:
                return str(package_share(rest[0]))
            raise LaunchError(f"{where}: unsupported substitution $({m.group(1)})")

        return _SUBST.sub(one, text)

    def condition(self, el: ET.Element, where: str) -> bool:
        for attr, want in (("if", True), ("unless", False)):
            if attr in el.attrib:
                value = self.subst(el.attrib[attr], where).strip().lower()
                if value not in ("true", "false", "1", "0"):
                    raise LaunchError(f"{where}: {attr}={value!r} is not true/false")
                if (value in ("true", "1")) != want:
                    return False
        return True


_ALLOWED = {
    "launch": set(),
    "arg": {"name", "default", "description", "value"},
    "let": {"name", "value"},
    "group": {"if", "unless"},
    "include": {"file", "if", "unless"},
    "node": {"pkg", "exec", "name", "namespace", "output", "respawn", "respawn_delay",
             "on_exit", "if", "unless"},
    "param": {"name", "value", "from"},
    "remap": {"from", "to"},
}


def _check(el: ET.Element, where: str) -> None:
    if el.tag not in _ALLOWED:
        raise LaunchError(f"{where}: <{el.tag}> is not supported by v2r launch "
                          f"(supported: {sorted(_ALLOWED)})")
    extra = set(el.attrib) - _ALLOWED[el.tag]
    if extra:
        raise LaunchError(f"{where}: <{el.tag}> attribute {sorted(extra)[0]!r} is not supported")


def declared_args(path: Path) -> list[ArgSpec]:
    root = _parse(path)
    return [ArgSpec(a.attrib["name"], a.attrib.get("default"), a.attrib.get("description", ""))
            for a in root.iter("arg") if "name" in a.attrib and a in list(root)]


def _parse(path: Path) -> ET.Element:
    if path.suffixes[-2:] != [".launch", ".xml"] and path.suffix != ".xml":
        raise LaunchError(f"{path}: v2r launch reads ROS 2 XML launch files (*.launch.xml)")
    if not path.exists():
        raise LaunchError(f"launch file {path} does not exist")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise LaunchError(f"{path}: malformed XML: {e}") from e
    if root.tag != "launch":
        raise LaunchError(f"{path}: the root element must be <launch>, got <{root.tag}>")
    return root


def load(path: Path, args: dict[str, str]) -> list[NodeSpec]:
    """Evaluate a launch file with ``args`` into the nodes to start."""
    nodes: list[NodeSpec] = []
    _load_into(path, args, nodes, depth=0)
    names = [n.namespace + "/" + n.name for n in nodes]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise LaunchError(f"two nodes would share the name {sorted(dup)[0]}")
    return nodes


def _load_into(path: Path, args: dict[str, str], nodes: list[NodeSpec], depth: int) -> None:
    if depth > 8:
        raise LaunchError(f"{path}: includes nested more than 8 deep")
    root = _parse(path)
    ctx = _Context({})
    given = dict(args)
    for el in root:
        if el.tag == "arg":
            _check(el, f"{path.name}")
            name = el.attrib.get("name")
            if not name:
                raise LaunchError(f"{path.name}: <arg> needs a name")
            if name in given:
                ctx.vars[name] = given.pop(name)
            elif "default" in el.attrib:
                ctx.vars[name] = ctx.subst(el.attrib["default"], f"{path.name} arg {name}")
            else:
                raise LaunchError(f"{path.name}: argument {name!r} is required (give {name}:=...)")
    if given and depth == 0:
        known = [a.attrib.get("name") for a in root if a.tag == "arg"]
        raise LaunchError(f"{path.name} has no argument {sorted(given)[0]!r}; it has {known}")
    _walk(root, ctx, path, nodes, depth)


def _walk(root: ET.Element, ctx: _Context, path: Path, nodes: list[NodeSpec], depth: int) -> None:
    for el in root:
        where = f"{path.name} <{el.tag}>"
        _check(el, where)
        if el.tag == "arg":
            continue
        if el.tag == "let":
            ctx.vars[el.attrib["name"]] = ctx.subst(el.attrib.get("value"), where)
        elif el.tag == "group":
            if ctx.condition(el, where):
                _walk(el, ctx, path, nodes, depth)
        elif el.tag == "include":
            if not ctx.condition(el, where):
                continue
            inc = Path(ctx.subst(el.attrib.get("file"), where))
            if not inc.is_absolute():
                inc = path.parent / inc
            inc_args = {}
            for a in el:
                _check(a, where)
                if a.tag != "arg":
                    raise LaunchError(f"{where}: only <arg name value> may appear in <include>")
                inc_args[a.attrib["name"]] = ctx.subst(a.attrib.get("value"), where)
            _load_into(inc, inc_args, nodes, depth + 1)
        elif el.tag == "node":
            if ctx.condition(el, where):
                nodes.append(_node(el, ctx, where))
        else:
            raise LaunchError(f"{where}: <{el.tag}> is not allowed here")


def _node(el: ET.Element, ctx: _Context, where: str) -> NodeSpec:
    a = {k: ctx.subst(v, where) for k, v in el.attrib.items()}
    if "exec" not in a or "pkg" not in a:
        raise LaunchError(f"{where}: <node> needs pkg and exec")
    node = NodeSpec(
        package=a["pkg"],
        executable=a["exec"],
        name=a.get("name", a["exec"]),
        namespace=a.get("namespace", ""),
        respawn=a.get("respawn", "false").lower() in ("true", "1"),
        respawn_delay_s=float(a.get("respawn_delay", "1.0")),
        shutdown_on_exit=a.get("on_exit", "") == "shutdown",
    )
    if "on_exit" in a and a["on_exit"] != "shutdown":
        raise LaunchError(f"{where}: on_exit={a['on_exit']!r}; only 'shutdown' is supported")
    for child in el:
        _check(child, where)
        if child.tag == "param":
            if "from" in child.attrib:
                f = ctx.subst(child.attrib["from"], where)
                if not Path(f).exists():
                    raise LaunchError(f"{where}: parameters file {f} does not exist")
                node.param_files.append(f)
            elif "name" in child.attrib and "value" in child.attrib:
                node.params.append((child.attrib["name"], ctx.subst(child.attrib["value"], where)))
            else:
                raise LaunchError(f"{where}: <param> needs name and value, or from")
        elif child.tag == "remap":
            node.remaps.append((ctx.subst(child.attrib["from"], where),
                                ctx.subst(child.attrib["to"], where)))
        else:
            raise LaunchError(f"{where}: <{child.tag}> is not allowed inside <node>")
    return node


class Launcher:
    """Runs nodes as child processes; see the module docstring for the exit rules."""

    def __init__(self, nodes: list[NodeSpec], grace_s: float = 5.0):
        self.nodes = nodes
        self.grace_s = grace_s
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def _start(self, node: NodeSpec) -> None:
        proc = subprocess.Popen(node.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)  # our Ctrl-C is forwarded deliberately
        self.procs[node.name] = proc
        threading.Thread(target=self._pump, args=(node.name, proc), daemon=True).start()

    @staticmethod
    def _pump(name: str, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, b""):
            sys.stdout.write(f"[{name}] {line.decode(errors='replace')}")
            sys.stdout.flush()

    def request_stop(self, *_: object) -> None:
        self._stop.set()

    def run(self) -> int:
        for node in self.nodes:
            self._start(node)
        print(f"[v2r launch] started {len(self.nodes)} nodes: "
              + ", ".join(f"{n.name} (pid {self.procs[n.name].pid})" for n in self.nodes),
              flush=True)
        code = 0
        while not self._stop.wait(0.2):
            for node in self.nodes:
                rc = self.procs[node.name].poll()
                if rc is None:
                    continue
                if node.respawn and not node.shutdown_on_exit:
                    print(f"[v2r launch] {node.name} exited ({rc}); respawning in "
                          f"{node.respawn_delay_s:.1f} s", flush=True)
                    time.sleep(node.respawn_delay_s)
                    self._start(node)
                elif rc != 0 or node.shutdown_on_exit:
                    print(f"[v2r launch] {node.name} exited with code {rc}: shutting down",
                          flush=True)
                    code = 0 if rc == 0 else min(abs(rc), 125)  # signal -9 -> 9
                    self._stop.set()
                    break
        self.shutdown()
        return code

    def shutdown(self) -> None:
        live = {n: p for n, p in self.procs.items() if p.poll() is None}
        for p in live.values():
            p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + self.grace_s
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for name, p in live.items():
                try:
                    p.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    print(f"[v2r launch] {name} ignored the previous signal; sending {sig.name}",
                          flush=True)
                    p.send_signal(sig)
            deadline = time.monotonic() + 2.0
        for p in live.values():
            p.wait()


# Executables that bind the xArm controller's fixed ports: the graph runs in its own network
# namespace (`unshare -rn`, no privileges needed), where every node shares a private loopback.
NETNS_EXECUTABLES = {"twin_node"}
_NETNS_ENV = "V2R_LAUNCH_NETNS"


def _reexec_in_netns(argv: list[str]) -> int:
    import shutil

    if shutil.which("unshare") is None or shutil.which("ip") is None:
        print("error: the twin needs a private network namespace: install util-linux (unshare) "
              "and iproute2 (ip), or run scripts/setup.sh", file=sys.stderr)
        return 2
    env = {**os.environ, _NETNS_ENV: "1", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    cmd = ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$0" "$@"',
           sys.executable, "-m", "video2reward.cli.main", "launch", *argv]
    print("[v2r launch] the graph binds the xArm ports: running it in a private network "
          "namespace", flush=True)
    os.execvpe(cmd[0], cmd, env)
    return 2  # not reached


def _find_file(name: str) -> Path:
    p = Path(name)
    if p.exists() or p.is_absolute() or "/" in name:
        return p
    return package_share(PACKAGE) / "launch" / name


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    path = _find_file(argv[0])
    args: dict[str, str] = {}
    flags = []
    for a in argv[1:]:
        if ":=" in a:
            k, v = a.split(":=", 1)
            args[k] = v
        elif a.startswith("-"):
            flags.append(a)
        else:
            print(f"error: expected name:=value launch arguments, got {a!r}", file=sys.stderr)
            return 2
    try:
        if "--show-args" in flags:
            for spec in declared_args(path):
                print(f"{spec.name:<20} default={spec.default!s:<24} {spec.description}")
            return 0
        nodes = load(path, args)
        if "--print" in flags:
            for n in nodes:
                print(shlex.join(n.command()))
            return 0
    except LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if any(n.executable in NETNS_EXECUTABLES for n in nodes) and not os.environ.get(_NETNS_ENV):
        return _reexec_in_netns(argv)
    launcher = Launcher(nodes)
    signal.signal(signal.SIGINT, launcher.request_stop)
    signal.signal(signal.SIGTERM, launcher.request_stop)
    return launcher.run()
