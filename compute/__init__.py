"""Shared compute plumbing: devices, host-to-device staging, CUDA streams."""
