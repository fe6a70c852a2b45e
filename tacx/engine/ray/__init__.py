"""The Ray executor: each daughter runs as one Ray job through the node-side runner (node.py)."""
