"""The engine: the coordinator and its parts (scheduling, task runs, attempts, recovery, sweeps) and the executors that run daughters. Imports no Textual."""
