"""The store's schema: the DDL that takes a database from each version to the next, and the
version this tacx writes (SQLite's user_version).
"""

from __future__ import annotations

import sqlite3

from tacx.store.errors import StoreError

_SCHEMA_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE tasks (
    id               INTEGER PRIMARY KEY,
    trace_id         TEXT NOT NULL,
    workflow         TEXT NOT NULL,
    workflow_path    TEXT NOT NULL,
    workflow_text    TEXT NOT NULL,
    workflow_hash    TEXT NOT NULL,
    title            TEXT NOT NULL,
    inputs           TEXT NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    status           TEXT NOT NULL,
    dedupe_key       TEXT,
    project_root     TEXT NOT NULL,
    workspace        TEXT,
    error            TEXT,
    wait_reason      TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created_at       REAL NOT NULL,
    started_at       REAL,
    ended_at         REAL
);
CREATE INDEX tasks_queue ON tasks(status, priority DESC, id);
CREATE INDEX tasks_dedupe ON tasks(dedupe_key) WHERE dedupe_key IS NOT NULL;
CREATE INDEX tasks_cancel ON tasks(cancel_requested) WHERE cancel_requested = 1;
CREATE TABLE stages (
    id                 INTEGER PRIMARY KEY,
    task_id            INTEGER NOT NULL REFERENCES tasks(id),
    name               TEXT NOT NULL,
    position           INTEGER NOT NULL,
    status             TEXT NOT NULL DEFAULT 'pending',
    attempt            INTEGER NOT NULL DEFAULT 0,
    failures           INTEGER NOT NULL DEFAULT 0,
    loops              INTEGER NOT NULL DEFAULT 0,
    provider           TEXT,
    model              TEXT,
    exit_code          INTEGER,
    started_at         REAL,
    ended_at           REAL,
    error              TEXT,
    result             TEXT,
    wait_reason        TEXT,
    session_id         TEXT,
    log_path           TEXT,
    input_tokens       INTEGER NOT NULL DEFAULT 0,
    output_tokens      INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens  INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd           REAL NOT NULL DEFAULT 0,
    UNIQUE (task_id, name)
);
CREATE TABLE daughters (
    id          INTEGER PRIMARY KEY,
    task_id     INTEGER NOT NULL REFERENCES tasks(id),
    stage_id    INTEGER NOT NULL REFERENCES stages(id),
    stage       TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    pid         INTEGER NOT NULL,
    create_time REAL NOT NULL,
    argv        TEXT NOT NULL,
    log_path    TEXT NOT NULL,
    status_path TEXT NOT NULL,
    started_at  REAL NOT NULL,
    ended_at    REAL,
    exit_code   INTEGER,
    signal      INTEGER,
    peak_rss    INTEGER,
    cpu_seconds REAL
);
CREATE INDEX daughters_open ON daughters(ended_at) WHERE ended_at IS NULL;
CREATE INDEX daughters_stage ON daughters(stage_id);
CREATE TABLE events (
    id      INTEGER PRIMARY KEY,
    task_id INTEGER,
    stage   TEXT,
    ts      REAL NOT NULL,
    kind    TEXT NOT NULL,
    data    TEXT NOT NULL
);
CREATE INDEX events_task ON events(task_id, id);
CREATE TABLE usage (
    id                 INTEGER PRIMARY KEY,
    task_id            INTEGER NOT NULL,
    stage_id           INTEGER NOT NULL,
    ts                 REAL NOT NULL,
    message_id         TEXT,
    model              TEXT,
    input_tokens       INTEGER NOT NULL DEFAULT 0,
    output_tokens      INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens  INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd           REAL NOT NULL DEFAULT 0
);
CREATE INDEX usage_stage ON usage(stage_id);
"""

# Agents: usage rows per attempt and message (a log parsed again after a crash counts
# nothing twice), what each agent said about itself, the task's git worktree, and what a
# task had spent when it was last retried (its budget counts from there).
_SCHEMA_V2 = """
ALTER TABLE usage ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;
CREATE UNIQUE INDEX usage_message ON usage(stage_id, attempt, message_id);
CREATE INDEX usage_ts ON usage(ts);
ALTER TABLE stages ADD COLUMN turns INTEGER NOT NULL DEFAULT 0;
ALTER TABLE stages ADD COLUMN api_retries INTEGER NOT NULL DEFAULT 0;
ALTER TABLE stages ADD COLUMN rate_limits INTEGER NOT NULL DEFAULT 0;
ALTER TABLE stages ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN branch TEXT;
ALTER TABLE tasks ADD COLUMN base_commit TEXT;
ALTER TABLE tasks ADD COLUMN budget_base_usd REAL NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN budget_base_tokens INTEGER NOT NULL DEFAULT 0;
CREATE INDEX usage_task ON usage(task_id, stage_id, attempt);
"""

# Version 3: where a task came from (a source's name, and a link to its item, an issue), and
# when its source was told how it ended (NULL: not yet, told again at the next start).
_SCHEMA_V3 = """
ALTER TABLE tasks ADD COLUMN source TEXT;
ALTER TABLE tasks ADD COLUMN source_url TEXT;
ALTER TABLE tasks ADD COLUMN source_told REAL;
CREATE INDEX tasks_source ON tasks(source) WHERE source IS NOT NULL;
"""

# Version 4: daughters by task, for `tacx rm` and `prune`, which delete a task's rows from
# every table (without it each task's delete read the whole daughters table: pruning
# 9,098 tasks of 10,000 took 7.2 s, 1.7 s with it: bench/prune.py).
_SCHEMA_V4 = """
CREATE INDEX daughters_task ON daughters(task_id);
"""

# Version 5: what `tacx report` reads (tacx/store/reports.py, spend.py), kept fast at 100,000
# tasks over 90 days (bench/report.py: 342,000 stages, 2.0 M usage rows, 1.0 M events; medians
# of 5 on 2 shared cores, load 1-1.6): a full-history report took 0.22-1.6 s without these,
# 0.06-0.17 s with them (cost 0.12-0.17 s; by task, the 50 that cost most as a terminal
# shows them, 0.09 s, every task 0.63 s; stats 0.15 s; compare 0.08-0.15 s); over the last
# 7 days under 0.1 s. Migrating 100,000 tasks from version 4: 7 s, once. The price is paid in
# writes (us at 100,000 tasks, schema 4 -> 5, bench/report.py): a usage row 4.2 -> 22 (its
# trigger), an event 1.1 -> 3.8 (attempt_ends' trigger tests its kind), a failed attempt's
# event 2.6 -> 13, a running stage's totals 2.6 -> 9.4 (stages_runs), an attempt's start and
# end 6.6 -> 120 (out of and back into stages_runs and the three durations indexes: once an
# attempt, beside starting a process); deleting 5,000 tasks 0.46 s instead of 0.21 (measured
# before attempt_ends, whose rows go by their key's task prefix).
# - usage_rollup: usage summed per quarter hour (bucket = ts // 900), stage attempt and model,
#   with the task, its workflow and the attempt's provider; kept by a trigger as usage rows
#   are inserted (usage rows are never updated, and rm/prune delete a task's rows from it as
#   from usage). Every time zone's offset is whole quarter hours, so local days, weeks and
#   months are whole buckets: 400,000 rows to sum instead of 2 M (cost by day 1.6 s ->
#   0.17 s). A covering index per group (workflow, provider, model, task) gives its rows in
#   order, so SQLite sums them without sorting; a partial one holds the rows of cost 0
#   (unpriced usage).
# - stages carry their task's workflow and creation time (a trigger sets them as stages are
#   inserted), so stage statistics need no join with tasks. stages_runs sums them in
#   workflow, stage and state order (then provider and model: compare filters on them).
#   The durations indexes (by workflow, provider or model, then stage and whole second of
#   the ended runs' durations) give the runs counted per second in order: p50/p95 are read
#   from those counts and the one second holding each rank, no duration sorted in Python.
#   They also hold status, started_at and ended_at, so SQLite before 3.41 (which computes an
#   indexed expression again from the table) reads them alone.
# - attempt_ends: the attempts that ended badly (a stage.failed, timed_out or cancelled
#   event, 5% of events), copied by a trigger with their task's workflow and creation time
#   and their error's words before the output tacx appends: failures by reason grouped from
#   its index, without joining events to tasks or reading JSON (125 ms -> 10 of stats'
#   time). rm/prune delete its rows with the task's.
# - tasks by creation time and by workflow and state (outcomes 0.23 s -> 0.06 s).
_SCHEMA_V5 = """
CREATE TABLE usage_rollup (
    bucket             INTEGER NOT NULL,
    stage_id           INTEGER NOT NULL,
    attempt            INTEGER NOT NULL,
    model              TEXT NOT NULL,
    task_id            INTEGER NOT NULL,
    workflow           TEXT,
    provider           TEXT,
    input_tokens       INTEGER NOT NULL,
    output_tokens      INTEGER NOT NULL,
    cache_read_tokens  INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    cost_usd           REAL NOT NULL,
    PRIMARY KEY (bucket, stage_id, attempt, model)
) WITHOUT ROWID;
INSERT INTO usage_rollup
    SELECT CAST(u.ts / 900 AS INTEGER), u.stage_id, u.attempt, COALESCE(u.model, ''), u.task_id,
           (SELECT workflow FROM tasks WHERE id = u.task_id), (SELECT provider FROM stages WHERE id = u.stage_id),
           SUM(u.input_tokens), SUM(u.output_tokens), SUM(u.cache_read_tokens), SUM(u.cache_write_tokens),
           SUM(u.cost_usd)
    FROM usage u GROUP BY 1, 2, 3, 4;
CREATE INDEX usage_rollup_task ON usage_rollup(task_id, bucket, input_tokens, output_tokens, cache_read_tokens,
    cache_write_tokens, cost_usd);
CREATE INDEX usage_rollup_workflow ON usage_rollup(workflow, bucket, task_id, input_tokens, output_tokens,
    cache_read_tokens, cache_write_tokens, cost_usd);
CREATE INDEX usage_rollup_provider ON usage_rollup(provider, bucket, task_id, input_tokens, output_tokens,
    cache_read_tokens, cache_write_tokens, cost_usd);
CREATE INDEX usage_rollup_model ON usage_rollup(model, bucket, task_id, input_tokens, output_tokens,
    cache_read_tokens, cache_write_tokens, cost_usd);
CREATE INDEX usage_rollup_group ON usage_rollup(stage_id, attempt, model, cost_usd, bucket);
CREATE INDEX usage_rollup_free ON usage_rollup(bucket, stage_id, attempt, model, task_id, workflow, provider,
    input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd) WHERE cost_usd = 0;
CREATE TRIGGER usage_rollup_add AFTER INSERT ON usage BEGIN
    INSERT INTO usage_rollup VALUES (
        CAST(NEW.ts / 900 AS INTEGER), NEW.stage_id, NEW.attempt, COALESCE(NEW.model, ''), NEW.task_id,
        (SELECT workflow FROM tasks WHERE id = NEW.task_id), (SELECT provider FROM stages WHERE id = NEW.stage_id),
        NEW.input_tokens, NEW.output_tokens, NEW.cache_read_tokens, NEW.cache_write_tokens, NEW.cost_usd)
    ON CONFLICT (bucket, stage_id, attempt, model) DO UPDATE SET
        input_tokens = input_tokens + excluded.input_tokens, output_tokens = output_tokens + excluded.output_tokens,
        cache_read_tokens = cache_read_tokens + excluded.cache_read_tokens,
        cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens, cost_usd = cost_usd + excluded.cost_usd;
END;
CREATE INDEX tasks_created ON tasks(created_at);
CREATE INDEX tasks_outcomes ON tasks(workflow, status, created_at);
ALTER TABLE stages ADD COLUMN workflow TEXT;
ALTER TABLE stages ADD COLUMN task_created_at REAL;
UPDATE stages SET (workflow, task_created_at) = (SELECT workflow, created_at FROM tasks WHERE id = stages.task_id);
CREATE TRIGGER stages_task_facts AFTER INSERT ON stages BEGIN
    UPDATE stages SET (workflow, task_created_at) = (SELECT workflow, created_at FROM tasks WHERE id = NEW.task_id)
    WHERE id = NEW.id;
END;
CREATE INDEX stages_runs ON stages(workflow, name, status, provider, model, task_created_at, attempt, position,
    input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_usd)
    WHERE attempt > 0 OR status = 'skipped';
CREATE INDEX stages_durations ON stages(workflow, name, CAST(ended_at - started_at AS INTEGER), task_created_at,
    status, started_at, ended_at)
    WHERE status IN ('succeeded', 'failed', 'timed_out') AND started_at IS NOT NULL AND ended_at IS NOT NULL;
CREATE INDEX stages_provider_durations ON stages(provider, name, CAST(ended_at - started_at AS INTEGER),
    task_created_at, workflow, status, started_at, ended_at)
    WHERE status IN ('succeeded', 'failed', 'timed_out') AND started_at IS NOT NULL AND ended_at IS NOT NULL;
CREATE INDEX stages_model_durations ON stages(model, name, CAST(ended_at - started_at AS INTEGER),
    task_created_at, workflow, status, started_at, ended_at)
    WHERE status IN ('succeeded', 'failed', 'timed_out') AND started_at IS NOT NULL AND ended_at IS NOT NULL;
CREATE TABLE attempt_ends (
    task_id         INTEGER NOT NULL,
    event_id        INTEGER NOT NULL,
    workflow        TEXT NOT NULL,
    task_created_at REAL NOT NULL,
    stage           TEXT,
    kind            TEXT NOT NULL,
    reason          TEXT,
    PRIMARY KEY (task_id, event_id)
) WITHOUT ROWID;
CREATE INDEX attempt_ends_reasons ON attempt_ends(workflow, stage, kind, reason, task_created_at);
INSERT INTO attempt_ends
    SELECT e.task_id, e.id, t.workflow, t.created_at, e.stage, e.kind, substr(json_extract(e.data, '$.error'), 1, MIN(200, instr(json_extract(e.data, '$.error') || '; last output:', '; last output:') - 1)) FROM events e JOIN tasks t ON t.id = e.task_id
    WHERE e.kind IN ('stage.failed', 'stage.timed_out', 'stage.cancelled');
CREATE TRIGGER attempt_ends_add AFTER INSERT ON events
    WHEN NEW.kind IN ('stage.failed', 'stage.timed_out', 'stage.cancelled') BEGIN
    INSERT INTO attempt_ends SELECT NEW.task_id, NEW.id, t.workflow, t.created_at, NEW.stage, NEW.kind, substr(json_extract(NEW.data, '$.error'), 1, MIN(200, instr(json_extract(NEW.data, '$.error') || '; last output:', '; last output:') - 1))
    FROM tasks t WHERE t.id = NEW.task_id;
END;
"""

# Version 6: which executor runs a daughter (local, ray), so recovery asks the right one
# for it, and the node it runs on (NULL: this machine; a Ray job's node once it started).
_SCHEMA_V6 = """
ALTER TABLE daughters ADD COLUMN executor TEXT NOT NULL DEFAULT 'local';
ALTER TABLE daughters ADD COLUMN node TEXT;
"""

# Forward migrations: MIGRATIONS[n] takes a database from user_version n to n + 1.
MIGRATIONS: list[str] = [_SCHEMA_V1, _SCHEMA_V2, _SCHEMA_V3, _SCHEMA_V4, _SCHEMA_V5, _SCHEMA_V6]
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    """The database's user_version; a StoreError for a database from a newer tacx."""
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        name = conn.execute("PRAGMA database_list").fetchone()[2] or "the database"
        raise StoreError(
            f"{name} has schema version {version}, newer than this tacx understands ({SCHEMA_VERSION}): upgrade tacx"
        )
    return version
