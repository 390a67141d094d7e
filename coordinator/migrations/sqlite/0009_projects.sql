-- Projects (a registered repository), the pipelines they own, their
-- encrypted variables, schedules, API tokens, the refs last seen of each
-- repository, and trigger events (a push or a schedule tick recorded
-- durably before its pipeline is planned).

CREATE TABLE projects (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT NOT NULL UNIQUE,
    repo            TEXT NOT NULL,
    default_branch  TEXT NOT NULL,
    protected_refs  TEXT NOT NULL,          -- JSON array of glob patterns
    poll_seconds    INTEGER,                -- NULL: no polling
    registry        TEXT,
    webhook_secret  TEXT NOT NULL,          -- an encrypted envelope
    created_at      TEXT NOT NULL,
    polled_at       TEXT                    -- NULL: refs not listed yet
);

ALTER TABLE pipelines ADD COLUMN project_id INTEGER;
ALTER TABLE pipelines ADD COLUMN project TEXT;
ALTER TABLE pipelines ADD COLUMN iid INTEGER;
ALTER TABLE pipelines ADD COLUMN source TEXT NOT NULL DEFAULT 'push';
ALTER TABLE pipelines ADD COLUMN variables TEXT;   -- JSON of the pipeline variables
CREATE UNIQUE INDEX pipelines_by_project_iid ON pipelines(project_id, iid) WHERE project_id IS NOT NULL;

CREATE TABLE project_variables (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id  INTEGER NOT NULL,
    key         TEXT NOT NULL,
    env_scope   TEXT NOT NULL,
    value       TEXT NOT NULL,              -- an encrypted envelope
    masked      INTEGER NOT NULL,
    protected   INTEGER NOT NULL,
    file        INTEGER NOT NULL,
    raw         INTEGER NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE UNIQUE INDEX project_variables_by_key ON project_variables(project_id, key, env_scope);

CREATE TABLE api_tokens (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    token_sha256  TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL,
    project_id    INTEGER,                  -- NULL: every project
    description   TEXT,
    created_at    TEXT NOT NULL,
    expires_at    TEXT,
    last_used_at  TEXT
);

CREATE TABLE schedules (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id        INTEGER NOT NULL,
    cron              TEXT NOT NULL,
    timezone          TEXT NOT NULL,
    git_ref           TEXT NOT NULL,
    variables         TEXT NOT NULL,        -- JSON
    description       TEXT,
    next_run_at       TEXT NOT NULL,
    last_pipeline_id  INTEGER,
    created_at        TEXT NOT NULL
);
CREATE INDEX schedules_by_next_run ON schedules(next_run_at);

CREATE TABLE project_refs (
    project_id  INTEGER NOT NULL,
    git_ref     TEXT NOT NULL,              -- refs/heads/NAME or refs/tags/NAME
    sha         TEXT NOT NULL,
    PRIMARY KEY (project_id, git_ref)
);

CREATE TABLE trigger_events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id   INTEGER NOT NULL,
    source       TEXT NOT NULL,             -- push | schedule
    git_ref      TEXT NOT NULL,             -- branch or tag name
    ref_is_tag   INTEGER NOT NULL,
    before_sha   TEXT,
    after_sha    TEXT,                      -- NULL: the ref's head when planned
    variables    TEXT NOT NULL,             -- JSON
    dedupe_key   TEXT NOT NULL UNIQUE,
    state        TEXT NOT NULL,             -- pending | created | refused
    pipeline_id  INTEGER,
    error        TEXT,
    created_at   TEXT NOT NULL,
    schedule_id  INTEGER                 -- the schedule of a tick
);
CREATE INDEX trigger_events_by_state ON trigger_events(state);
