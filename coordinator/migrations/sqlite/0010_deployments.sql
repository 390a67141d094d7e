-- Environments of a project and their deployments (one per run of a job
-- with `environment:` action start; a stop job has a row too, without an
-- iid, that is not shown as a deployment), notification rules, and the outbox of
-- notifications with their delivery attempts. A notification is written in
-- the transaction of the event that makes it, then delivered by a worker.

ALTER TABLE pipelines ADD COLUMN triggered_by TEXT;   -- token:NAME, admin, schedule:ID, push

CREATE TABLE environments (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id    INTEGER NOT NULL,
    name          TEXT NOT NULL,
    slug          TEXT NOT NULL,
    tier          TEXT NOT NULL,
    url           TEXT,
    state         TEXT NOT NULL,            -- available | stopped
    auto_stop_at  TEXT,                     -- NULL: never
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE UNIQUE INDEX environments_by_name ON environments(project_id, name);

CREATE TABLE deployments (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id      INTEGER NOT NULL,
    iid             INTEGER,                -- NULL for a stop job's row
    environment_id  INTEGER NOT NULL,
    action          TEXT NOT NULL,          -- start | stop
    pipeline_id     INTEGER NOT NULL,
    job_id          INTEGER NOT NULL,
    sha             TEXT NOT NULL,
    git_ref         TEXT NOT NULL,
    tag             INTEGER NOT NULL,
    status          TEXT NOT NULL,          -- created | running | success | failed | canceled | skipped
    source          TEXT NOT NULL,          -- the pipeline's source, or rollback
    triggered_by    TEXT NOT NULL,
    rollback_of     INTEGER,
    reason          TEXT,
    url             TEXT,                   -- environment:url as expanded
    auto_stop_in    INTEGER,                -- seconds, from environment:auto_stop_in
    on_stop         TEXT,                   -- environment:on_stop
    created_at      TEXT NOT NULL,
    started_at      TEXT,
    finished_at     TEXT
);
CREATE UNIQUE INDEX deployments_by_iid ON deployments(project_id, iid);
CREATE INDEX deployments_by_environment ON deployments(environment_id, status);
CREATE INDEX deployments_by_job ON deployments(job_id);
CREATE INDEX deployments_by_pipeline ON deployments(pipeline_id);

CREATE TABLE notification_rules (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id  INTEGER NOT NULL,
    kind        TEXT NOT NULL,              -- email | webhook
    target      TEXT NOT NULL,
    events      TEXT NOT NULL,              -- JSON array of event names
    ref_glob    TEXT,
    secret      TEXT,                       -- an encrypted envelope
    created_at  TEXT NOT NULL
);
CREATE INDEX notification_rules_by_project ON notification_rules(project_id);

CREATE TABLE notifications (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id       INTEGER NOT NULL,
    rule_id          INTEGER NOT NULL,
    event            TEXT NOT NULL,
    pipeline_id      INTEGER,
    deployment_id    INTEGER,
    webhook_id       TEXT NOT NULL UNIQUE,
    state            TEXT NOT NULL,         -- pending | delivered | failed
    body             TEXT,                  -- rendered at the first try, sent again as is
    next_attempt_at  TEXT,
    created_at       TEXT NOT NULL,
    delivered_at     TEXT
);
CREATE INDEX notifications_due ON notifications(state, next_attempt_at);
CREATE INDEX notifications_by_project ON notifications(project_id);

CREATE TABLE notification_attempts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    notification_id  INTEGER NOT NULL,
    at               TEXT NOT NULL,
    ok               INTEGER NOT NULL,
    status           INTEGER,
    detail           TEXT NOT NULL,
    millis           INTEGER NOT NULL
);
CREATE INDEX notification_attempts_by_notification ON notification_attempts(notification_id);
