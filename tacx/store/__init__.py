"""The store: one SQLite file, its schema and migrations, the one writer, and the queries everyone reads with."""
