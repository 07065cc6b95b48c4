"""Video2Reward rewards."""
