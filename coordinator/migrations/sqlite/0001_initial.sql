-- Osprey coordinator schema, version 1.

CREATE TABLE agents (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    token_sha256  TEXT NOT NULL UNIQUE,
    tags          TEXT NOT NULL,          -- JSON array
    run_untagged  INTEGER NOT NULL,
    executor      TEXT NOT NULL,
    concurrency   INTEGER NOT NULL,
    created_at    TEXT NOT NULL
);

CREATE TABLE pipelines (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    repo        TEXT NOT NULL,
    git_ref     TEXT NOT NULL,
    ref_is_tag  INTEGER NOT NULL,
    sha         TEXT NOT NULL,
    status      TEXT NOT NULL,
    definition  TEXT NOT NULL,            -- JSON of osprey_shared::pipeline::Pipeline
    created_at  TEXT NOT NULL,
    finished_at TEXT
);

CREATE TABLE jobs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline_id       INTEGER NOT NULL REFERENCES pipelines(id),
    position          INTEGER NOT NULL,   -- order in the file
    name              TEXT NOT NULL,
    stage             TEXT NOT NULL,
    stage_index       INTEGER NOT NULL,
    status            TEXT NOT NULL,
    allow_failure     INTEGER NOT NULL,
    when_             TEXT NOT NULL,
    definition        TEXT NOT NULL,      -- JSON of osprey_shared::pipeline::JobDef
    agent_id          TEXT,
    agent_name        TEXT,
    attempt_id        TEXT,
    lease_epoch       INTEGER NOT NULL DEFAULT 0,
    job_token_sha256  TEXT,
    cancel_requested  INTEGER NOT NULL DEFAULT 0,
    started_at        TEXT,
    finished_at       TEXT,
    exit_code         INTEGER,
    failure_reason    TEXT,
    log_size          INTEGER NOT NULL DEFAULT 0,
    log_sealed        INTEGER NOT NULL DEFAULT 0,
    log_sha256        TEXT,
    artifact_size     INTEGER,
    artifact_sha256   TEXT
);
CREATE INDEX jobs_by_pipeline ON jobs(pipeline_id);
CREATE INDEX jobs_by_status ON jobs(status);

-- A job's log as stored chunks; chunk `offset`s are contiguous from 0 and
-- never overlap (the append path stores only bytes past `jobs.log_size`).
CREATE TABLE log_chunks (
    job_id  INTEGER NOT NULL REFERENCES jobs(id),
    offset  INTEGER NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (job_id, offset)
);
