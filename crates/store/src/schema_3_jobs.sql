-- vlmflow provenance database, schema version 3: cluster jobs.
-- A run that was a Slurm batch job names the job; its `host` is the node the work ran on.
ALTER TABLE runs ADD COLUMN job TEXT;
