-- vlmflow provenance database, schema version 2: run records.
-- A run that succeeded names its record: a content-addressed object (JSON) with its key, artifact,
-- params, metrics and lineage, written before the row, from which the database can be rebuilt.
ALTER TABLE runs ADD COLUMN record TEXT;
CREATE INDEX runs_by_record ON runs (record);
