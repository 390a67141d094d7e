-- Records that close: which attempt recorded a job's archive (an archive is
-- never replaced by the attempt that recorded it, nor by anyone after the
-- attempt has ended; a retry, being a new attempt, records its own), and
-- the Idempotency-Key of each pipeline created through the API, so a retried
-- POST returns the pipeline the first one created.
ALTER TABLE jobs ADD COLUMN artifact_attempt INTEGER;
UPDATE jobs SET artifact_attempt = attempt WHERE artifact_sha256 IS NOT NULL;

CREATE TABLE idempotency_keys (
    key             TEXT PRIMARY KEY,
    request_sha256  TEXT NOT NULL,        -- of the request body, as parsed
    pipeline_id     INTEGER NOT NULL REFERENCES pipelines(id),
    created_at      TEXT NOT NULL         -- keys older than 24 h are forgotten
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys(created_at);
