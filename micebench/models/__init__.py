"""Torch building blocks shared by rankers: segment ids, per-layer attention masks, encoder access."""
