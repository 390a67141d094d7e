-- When an agent's session last opened or closed, for the web UI's agent
-- list ("last seen"); a connected agent is seen now.
ALTER TABLE agents ADD COLUMN last_seen_at TEXT;

-- The web UI's "latest pipeline of each ref" of a project.
CREATE INDEX pipelines_by_project_ref ON pipelines(project_id, git_ref, id);
