"""Video2Reward configs."""
