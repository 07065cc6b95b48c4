"""Video2Reward cli."""
