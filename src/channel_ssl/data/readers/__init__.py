"""Readers of each source's native on-disk layout -> shards + manifest (real data and demo copies alike)."""
