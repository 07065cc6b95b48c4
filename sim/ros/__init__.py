"""ROS 2 shells around the twin (rclpy only here)."""
