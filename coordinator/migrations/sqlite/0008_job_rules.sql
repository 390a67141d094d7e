-- The keywords of a job the state machine reads (needs, retry,
-- allow_failure exit codes, start_in, resource_group) as a small JSON
-- object, so a transition loads them without each job's whole definition.
-- NULL for jobs stored before: their definition is read instead.
ALTER TABLE jobs ADD COLUMN rules TEXT;
