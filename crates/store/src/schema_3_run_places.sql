-- vlmflow provenance database, schema version 3: where a run happened.
-- A run that was a Slurm batch job names the job (its `host` is the node the work ran on); a restore
-- whose artifact was fetched from a remote cache names that remote.
ALTER TABLE runs ADD COLUMN job TEXT;
ALTER TABLE runs ADD COLUMN origin TEXT;
