"""Video2Reward calibration: camera intrinsics, eye-to-hand extrinsics and the workspace box.

    v2r calib handeye out=calibration.yaml            # automatic, in the twin (or backend=xarm)
    v2r calib intrinsics source=factory out=...       # or source=images images=<dir>
    v2r calib workspace out=...                       # jog the arm to the box corners
    v2r calib show file=calibration.yaml

Modules: ``board`` (ChArUco spec, PNG, detection, pose, gripper mount), ``intrinsics``,
``handeye`` (solver and its refusals), ``handeye_run`` (the pipeline: collect or replay,
solve, write the file), ``collect`` (the automatic pose routine over any
``robot.arm.Arm`` and ``robot.camera.Camera``), ``result`` (the versioned YAML),
``workspace``, ``sim_rig`` (the board in the MuJoCo twin, a twin-backed Arm, placing the
twin's camera from a result), ``cli`` and ``ros/collect_node`` (the ROS 2 shell).
"""
