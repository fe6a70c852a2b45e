"""The server wing: what tacx offers beyond its own terminal. The HTTP API, Prometheus
metrics and health (`--listen`), and notifications; each subscribes to the engine's events
and reads the store, and the engine knows none of them."""
