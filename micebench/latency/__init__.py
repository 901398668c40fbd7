"""Latency, throughput, memory and FLOPs of rankers, measured model-only on synthetic exact-length inputs."""
