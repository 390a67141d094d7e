-- Where a job's archive is in the artifact store (NULL: recorded before
-- keys existed, at the legacy key `{job}.tar`).
ALTER TABLE jobs ADD COLUMN artifact_key TEXT;
