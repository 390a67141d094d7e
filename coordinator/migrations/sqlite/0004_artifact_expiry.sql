-- `artifacts: expire_in`: when a job's archive is deleted (NULL = kept).
ALTER TABLE jobs ADD COLUMN artifact_expires_at TEXT;
CREATE INDEX jobs_by_artifact_expiry ON jobs(artifact_expires_at) WHERE artifact_expires_at IS NOT NULL;
