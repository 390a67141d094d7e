-- Where a job's archive is kept in the artifact store (artifacts/{job}/{attempt}-{uuid}.tar).
-- NULL for archives stored before: they are at the legacy key artifacts/{job}.tar.
ALTER TABLE jobs ADD COLUMN artifact_key TEXT;
