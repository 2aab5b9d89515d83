-- vlmflow provenance database, schema version 4: sweeps.
-- A sweep is a named group of trials, each one assignment of params built off the workspace (its
-- outs and its `stage_state` untouched); `sweep_runs` names the run that made each trial's
-- artifact of each stage it built.
CREATE TABLE sweeps (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    build_id   INTEGER NOT NULL REFERENCES builds(id),
    targets    TEXT    NOT NULL,              -- JSON array of stage names
    axes       TEXT    NOT NULL,              -- JSON array: the command line's STAGE.PARAM=… specs
    created_at REAL    NOT NULL
);

CREATE TABLE sweep_trials (
    sweep_id   INTEGER NOT NULL REFERENCES sweeps(id),
    trial      INTEGER NOT NULL,              -- 1, 2, …
    assignment TEXT    NOT NULL,              -- JSON object: "stage.param" → value
    status     TEXT    NOT NULL DEFAULT 'running'
               CHECK (status IN ('running', 'ok', 'failed', 'interrupted')),
    error      TEXT,                          -- the first stage that did not build, and why
    PRIMARY KEY (sweep_id, trial)
);

CREATE TABLE sweep_runs (
    sweep_id INTEGER NOT NULL REFERENCES sweeps(id),
    trial    INTEGER NOT NULL,
    stage    TEXT    NOT NULL,
    run_id   INTEGER NOT NULL REFERENCES runs(id),
    PRIMARY KEY (sweep_id, trial, stage)
);
