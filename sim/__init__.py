"""Video2Reward sim."""
