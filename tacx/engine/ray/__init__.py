"""The Ray executor: each stage attempt runs as one Ray job on a cluster (executor.py), by a small node-side runner shipped with the job (node.py)."""
