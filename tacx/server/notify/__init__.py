"""Notifications (tacx.yaml `notify:`): task ends, budget stops, agents waiting for a person
and source errors, through a webhook, a command or the terminal. Subscribes to the engine's
events like every other listener; the engine knows nothing of it."""
