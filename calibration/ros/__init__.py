"""ROS 2 shell of the calibration tools (imports rclpy; the core in calibration/ does not)."""
