"""v2r launch: reads the project's ROS 2 XML launch files as `ros2 launch` would, and runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from video2reward.cli.launch import LaunchError, declared_args, load, package_share

LAUNCH = package_share("video2reward") / "launch"


def _by_name(nodes):
    return {n.name: n for n in nodes}


def test_sim_graph_has_the_twin_in_place_of_camera_and_controller():
    nodes = _by_name(load(LAUNCH / "sim.launch.xml", {"reward_ckpt": "runs/r", "task": "push"}))
    assert set(nodes) == {"twin", "xarm_driver", "reward", "learner"}
    assert ("task", "push") in nodes["twin"].params
    assert ("ip", "127.0.0.1") in nodes["xarm_driver"].params
    assert ("ckpt", "runs/r") in nodes["reward"].params and nodes["reward"].respawn
    learner = nodes["learner"]
    assert learner.shutdown_on_exit
    assert ("action", "/xarm_driver/action") in learner.remaps
    assert ("reward", "/reward/reward") in learner.remaps
    assert learner.param_files and Path(learner.param_files[0]).name == "learner_cpu.yaml"
    cmd = learner.command()
    assert cmd[cmd.index("--ros-args") + 1 : cmd.index("--ros-args") + 3] == [
        "-r",
        "__node:=learner",
    ]


def test_robot_graph_splits_across_machines_by_argument():
    robot_pc = load(LAUNCH / "robot.launch.xml", {"with_reward": "false", "with_learner": "false"})
    assert sorted(n.name for n in robot_pc) == ["camera", "xarm_driver"]
    workstation = load(
        LAUNCH / "robot.launch.xml", {"with_camera": "false", "with_driver": "false"}
    )
    assert sorted(n.name for n in workstation) == ["learner", "reward"]
    full = _by_name(load(LAUNCH / "robot.launch.xml", {"robot_ip": "10.0.0.5"}))
    assert ("ip", "10.0.0.5") in full["xarm_driver"].params
    assert ("eval_mode", "false") in full["learner"].params


def test_eval_graph_only_acts():
    nodes = _by_name(load(LAUNCH / "eval.launch.xml", {"use_twin": "true"}))
    assert ("eval_mode", "true") in nodes["learner"].params
    assert "twin" in nodes


def test_episode_rewards_scores_in_the_learner_without_a_reward_node():
    """VIPER/Diffusion Reward: no reward node (it refuses them); the learner scores episodes."""
    for f, args in (("sim.launch.xml", {}), ("robot.launch.xml", {}),
                    ("eval.launch.xml", {"use_twin": "true"})):  # fmt: skip
        nodes = _by_name(load(LAUNCH / f, {**args, "episode_rewards": "true"}))
        assert "reward" not in nodes and "learner" in nodes, f
        assert ("episode_rewards", "true") in nodes["learner"].params, f
    nodes = _by_name(load(LAUNCH / "sim.launch.xml", {}))
    assert ("episode_rewards", "false") in nodes["learner"].params


def test_every_declared_argument_has_a_description():
    for f in LAUNCH.glob("*.launch.xml"):
        for arg in declared_args(f):
            assert arg.description, f"{f.name}: argument {arg.name} has no description"


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        ("<launch><executable cmd='ls'/></launch>", "<executable> is not supported"),
        (
            "<launch><node pkg='video2reward' exec='v2r' launch-prefix='gdb'/></launch>",
            "attribute 'launch-prefix'",
        ),
        ("<launch><arg name='a'/></launch>", "argument 'a' is required"),
        (
            "<launch><node pkg='video2reward' exec='v2r' name='$(eval 1+1)'/></launch>",
            "unsupported substitution",
        ),
        (
            "<launch><node pkg='video2reward' exec='v2r' name='$(var nope)'/></launch>",
            "not a declared argument",
        ),
        ("<launch><node pkg='other_pkg' exec='x'/></launch>", "only runs video2reward"),
        ("<launch><node pkg='video2reward' exec='no_such_exe'/></launch>", "no executable"),
        ("<launch><group if='maybe'/></launch>", "not true/false"),
        ("<launch><node", "malformed XML"),
        ("<notlaunch/>", "root element"),
    ],
)
def test_unsupported_or_malformed_files_are_refused_by_name(tmp_path, xml, message):
    f = tmp_path / "bad.launch.xml"
    f.write_text(xml)

    def commands() -> list[list[str]]:
        return [n.command() for n in load(f, {})]

    with pytest.raises(LaunchError, match=message.replace("(", r"\(").replace("$", r"\$")):
        commands()


def test_unknown_launch_argument_is_refused():
    with pytest.raises(LaunchError, match="no argument 'colour'"):
        load(LAUNCH / "sim.launch.xml", {"colour": "red"})


def _run_launch(tmp_path: Path, body: str) -> subprocess.Popen[str]:
    f = tmp_path / "t.launch.xml"
    f.write_text(f"<launch>{body}</launch>")
    env = {**os.environ, "ROS_DOMAIN_ID": "77", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    return subprocess.Popen(
        [sys.executable, "-m", "video2reward.cli.main", "launch", str(f)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def test_a_node_that_fails_ends_the_launch_with_an_error_naming_it(tmp_path):
    # v2r as a "node": it rejects --ros-args (exit 2), like a node with a bad parameter
    proc = _run_launch(tmp_path, "<node pkg='video2reward' exec='v2r' name='broken'/>")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "broken exited with code 2: shutting down" in out


@pytest.mark.ros
def test_ctrl_c_stops_every_node_cleanly(tmp_path):
    proc = _run_launch(
        tmp_path,
        "<node pkg='video2reward' exec='camera_node' name='cam'>"
        "<param name='source' value='twin'/><param name='width' value='32'/>"
        "<param name='height' value='32'/></node>",
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if "started 1 nodes" in line:
            break
    pid = int(lines[-1].split("pid ")[1].rstrip(")\n"))
    time.sleep(3.0)
    assert proc.poll() is None, "".join(lines)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the node is gone too
