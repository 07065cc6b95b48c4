"""The episode format every folder reads and writes: keys, the zarr episode store, video import.

    from video2reward.data import keys
    from video2reward.data.episode_store import EpisodeStore
"""
