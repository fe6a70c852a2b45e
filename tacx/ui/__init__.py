"""The dashboard: a Textual app hosting the engine (the engine itself imports no Textual)."""
