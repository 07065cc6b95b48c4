"""Robot-side core: keys, episode store, safety envelope, arm and camera interfaces (no ROS)."""
