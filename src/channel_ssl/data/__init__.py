"""Data: readers of each source's native layout (``readers/``), demo generators (``demo/``), shards, manifests, corpora."""
