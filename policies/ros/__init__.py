"""ROS 2 shell around the online learner (rclpy only here)."""
