"""ROS 2 shells around the robot core: message conversion, the arm driver and camera nodes.

Only modules in this package import rclpy or message types (tests/unit checks the rest).
"""
