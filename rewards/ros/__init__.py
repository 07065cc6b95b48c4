"""ROS 2 shells around the reward models (rclpy only here)."""
