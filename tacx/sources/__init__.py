"""Sources of tasks: things that poll somewhere (GitHub, later others) on a schedule and submit tasks with a dedupe key."""
