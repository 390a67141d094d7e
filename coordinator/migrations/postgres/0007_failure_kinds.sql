-- Why a job failed, as GitLab's failure reason (`retry:when` reads it);
-- `failure_reason` keeps the human text beside it.
ALTER TABLE jobs ADD COLUMN failure_kind TEXT;
