"""ROS 2 helpers every node uses: message <-> numpy conversion, parameters, one ``main()``.

    from video2reward.ros import convert
    from video2reward.ros.node_main import run_node
    from video2reward.ros.params import ParamSpec, declare_all, float_range

The nodes themselves live in each folder's ``ros/`` package (``robot/ros``, ``rewards/ros``,
``policies/ros``, ``sim/ros``, ``calibration/ros``); only those and this package import rclpy
or message types (tests/unit/test_layering.py checks the rest).
"""
