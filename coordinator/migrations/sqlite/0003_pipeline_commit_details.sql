-- What a pipeline's jobs learn of their commit and project beyond the sha:
-- CI_COMMIT_BEFORE_SHA, CI_COMMIT_MESSAGE / CI_COMMIT_TITLE, CI_DEFAULT_BRANCH.
ALTER TABLE pipelines ADD COLUMN before_sha TEXT;
ALTER TABLE pipelines ADD COLUMN commit_message TEXT;
ALTER TABLE pipelines ADD COLUMN default_branch TEXT;
