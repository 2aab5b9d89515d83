-- vlmflow provenance database, schema version 1.
-- Documented in README.md ("The provenance database"); `vlmflow query` reads it.

-- One row per `vlmflow build` invocation.
CREATE TABLE builds (
    id          INTEGER PRIMARY KEY,
    started_at  REAL    NOT NULL,             -- unix seconds
    finished_at REAL,
    argv        TEXT    NOT NULL,             -- JSON array
    host        TEXT    NOT NULL,
    pid         INTEGER NOT NULL,
    status      TEXT    NOT NULL DEFAULT 'running'
                CHECK (status IN ('running', 'ok', 'failed', 'interrupted'))
);

-- An artifact: a stage's output tree, stored once by content. `digest` is its manifest's digest.
CREATE TABLE artifacts (
    digest     TEXT    PRIMARY KEY,
    files      INTEGER NOT NULL,
    bytes      INTEGER NOT NULL,
    created_at REAL    NOT NULL,
    swept_at   REAL                            -- set when `vlmflow gc` deleted its objects
);

-- One execution (or restore) of a stage.
CREATE TABLE runs (
    id            INTEGER PRIMARY KEY,
    build_id      INTEGER NOT NULL REFERENCES builds(id),
    stage         TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    impl_version  TEXT    NOT NULL,
    key           TEXT    NOT NULL,           -- blake3 of key_material
    key_material  TEXT    NOT NULL,           -- canonical JSON: what the key was computed from
    params        TEXT    NOT NULL,           -- canonical JSON of the effective params
    overrides     TEXT    NOT NULL DEFAULT '{}', -- JSON of the --set overrides applied
    status        TEXT    NOT NULL
                  CHECK (status IN ('running', 'ran', 'restored', 'failed', 'interrupted')),
    artifact      TEXT    REFERENCES artifacts(digest),
    source_run    INTEGER REFERENCES runs(id), -- for a restore: the run that produced the artifact
    inputs_manifest TEXT,                     -- object digest: manifest of all file inputs at run time
    log           TEXT,                       -- object digest of the captured log
    error         TEXT,
    host          TEXT    NOT NULL,
    device        TEXT    NOT NULL,
    pid           INTEGER NOT NULL,
    started_at    REAL    NOT NULL,
    finished_at   REAL,
    CHECK (status NOT IN ('ran', 'restored') OR artifact IS NOT NULL)
);
CREATE INDEX runs_by_stage ON runs (stage, id);
CREATE INDEX runs_by_key ON runs (key, status);
CREATE INDEX runs_by_artifact ON runs (artifact);

-- The inputs a run read: workspace files and folders by digest.
CREATE TABLE run_inputs (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    path   TEXT    NOT NULL,
    digest TEXT    NOT NULL,
    PRIMARY KEY (run_id, path)
) WITHOUT ROWID;

-- The upstream artifacts a run consumed, and which run had produced each: the lineage edges.
CREATE TABLE run_upstreams (
    run_id          INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    stage           TEXT    NOT NULL,
    artifact        TEXT    NOT NULL REFERENCES artifacts(digest),
    producer_run_id INTEGER REFERENCES runs(id),
    PRIMARY KEY (run_id, stage)
) WITHOUT ROWID;

-- Numbers a run reported: `step` is NULL for a final value, the step number for a series.
CREATE TABLE metrics (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    name   TEXT    NOT NULL,
    step   INTEGER,
    value  REAL    NOT NULL
);
CREATE INDEX metrics_by_run ON metrics (run_id, name, step);

-- What the workspace holds now: for each stage, the run whose artifact is materialized.
CREATE TABLE stage_state (
    stage  TEXT    PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id)
) WITHOUT ROWID;

-- The stat cache: a file whose stat matches is not read again. `path` as in manifests.
CREATE TABLE stat_cache (
    path     TEXT    PRIMARY KEY,
    dev      INTEGER NOT NULL,
    ino      INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    mode     INTEGER NOT NULL,
    digest   BLOB    NOT NULL                  -- 32 raw bytes
) WITHOUT ROWID;
