-- Attempts (retry), manual/delayed jobs, resource groups, interruptible
-- jobs and coverage. Logs are kept per attempt: a retry never overwrites the
-- log of the attempt before it.

ALTER TABLE jobs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;   -- assignments so far
ALTER TABLE jobs ADD COLUMN resource_group TEXT;
ALTER TABLE jobs ADD COLUMN interruptible INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN scheduled_at TEXT;                    -- when a delayed job starts
ALTER TABLE jobs ADD COLUMN coverage REAL;
UPDATE jobs SET attempt = 1 WHERE attempt_id IS NOT NULL;

CREATE TABLE log_chunks_by_attempt (
    job_id   INTEGER NOT NULL REFERENCES jobs(id),
    attempt  INTEGER NOT NULL,
    offset   INTEGER NOT NULL,
    data     BLOB NOT NULL,
    PRIMARY KEY (job_id, attempt, offset)
);
INSERT INTO log_chunks_by_attempt (job_id, attempt, offset, data)
    SELECT job_id, 1, offset, data FROM log_chunks;
DROP TABLE log_chunks;
ALTER TABLE log_chunks_by_attempt RENAME TO log_chunks;

CREATE INDEX jobs_by_resource_group ON jobs(resource_group) WHERE resource_group IS NOT NULL;
