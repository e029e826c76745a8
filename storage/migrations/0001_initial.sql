-- Jobs, their images, per-user settings, favourites and a full-text index over prompts.

CREATE TABLE jobs (
    -- An explicit integer key: the full-text index refers to jobs by rowid, and only a rowid
    -- that is a declared INTEGER PRIMARY KEY is kept by VACUUM.
    seq               INTEGER PRIMARY KEY,
    id                TEXT NOT NULL UNIQUE,
    guild_id          INTEGER,                  -- NULL for direct messages
    channel_id        INTEGER NOT NULL,
    user_id           INTEGER NOT NULL,
    kind              TEXT NOT NULL CHECK (kind IN ('imagine', 'reroll', 'variation', 'upscale')),
    parent_job        TEXT REFERENCES jobs (id),
    parent_index      INTEGER,
    prompt            TEXT NOT NULL,
    negative          TEXT NOT NULL DEFAULT '',
    model             TEXT NOT NULL,
    sampler           TEXT NOT NULL,
    width             INTEGER NOT NULL,
    height            INTEGER NOT NULL,
    steps             INTEGER NOT NULL,
    guidance          REAL NOT NULL,
    strength          REAL,
    seed              INTEGER NOT NULL,
    count             INTEGER NOT NULL,
    init_image        TEXT,                     -- sha256 of the starting picture (img2img)
    status            TEXT NOT NULL DEFAULT 'queued'
                      CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    error             TEXT,
    nsfw_allowed      INTEGER NOT NULL DEFAULT 0, -- the channel is marked NSFW
    application_id    INTEGER,
    interaction_token TEXT,                     -- cleared once the result is delivered
    attachment_limit  INTEGER,                  -- bytes the interaction may upload
    message_id        INTEGER,
    created_at        REAL NOT NULL,
    started_at        REAL,
    finished_at       REAL,
    delivered_at      REAL,
    deleted_at        REAL
);

CREATE INDEX jobs_guild_created ON jobs (guild_id, created_at DESC);
CREATE INDEX jobs_user_created ON jobs (user_id, created_at DESC);
CREATE INDEX jobs_unfinished ON jobs (created_at)
    WHERE status IN ('queued', 'running') OR (status = 'done' AND delivered_at IS NULL);
CREATE INDEX jobs_parent ON jobs (parent_job) WHERE parent_job IS NOT NULL;

CREATE TABLE images (
    job_id     TEXT NOT NULL REFERENCES jobs (id),
    idx        INTEGER NOT NULL,
    seed       INTEGER NOT NULL,
    path       TEXT NOT NULL,                   -- relative to the image store
    sha256     TEXT NOT NULL,
    width      INTEGER NOT NULL,
    height     INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL,
    nsfw       INTEGER NOT NULL DEFAULT 0,      -- flagged by the model's safety checker
    PRIMARY KEY (job_id, idx)
);

CREATE TABLE user_settings (
    user_id    INTEGER PRIMARY KEY,
    aspect     TEXT,
    steps      INTEGER,
    guidance   REAL,
    negative   TEXT,
    model      TEXT,
    sampler    TEXT,
    count      INTEGER,
    remix      INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);

CREATE TABLE favourites (
    user_id    INTEGER NOT NULL,
    job_id     TEXT NOT NULL REFERENCES jobs (id),
    idx        INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (user_id, job_id, idx)
);

CREATE VIRTUAL TABLE jobs_fts USING fts5 (
    prompt,
    content = 'jobs',
    content_rowid = 'rowid',
    tokenize = 'unicode61 remove_diacritics 2',
    prefix = '2 3'
);

CREATE TRIGGER jobs_fts_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO jobs_fts (rowid, prompt) VALUES (new.rowid, new.prompt);
END;

CREATE TRIGGER jobs_fts_delete AFTER DELETE ON jobs BEGIN
    INSERT INTO jobs_fts (jobs_fts, rowid, prompt) VALUES ('delete', old.rowid, old.prompt);
END;

CREATE TRIGGER jobs_fts_update AFTER UPDATE OF prompt ON jobs BEGIN
    INSERT INTO jobs_fts (jobs_fts, rowid, prompt) VALUES ('delete', old.rowid, old.prompt);
    INSERT INTO jobs_fts (rowid, prompt) VALUES (new.rowid, new.prompt);
END;
