"""Video2Reward policies."""
