"""Video2Reward calibration."""
