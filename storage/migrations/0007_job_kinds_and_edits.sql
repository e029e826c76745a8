-- atelier: rebuilds tables
-- Job kinds are rows of a table the jobs refer to, so a new kind is one INSERT in a migration
-- (storage.records.JobKind lists the same names; a test keeps the two equal). SQLite cannot drop
-- the CHECK that listed them, so the jobs table is made again, with the same rows and rowids (the
-- full-text index refers to jobs by rowid), and with what the editing tools record:
--   mode        how the engine makes the pictures: txt2img, img2img or inpaint (bot.engine.types.Mode)
--   mask_image  sha256 of the mask of what to redraw (white), for Vary (Region) and `mask`
--   box         where the picture sits on the result's canvas, `x,y,w,h` (Zoom Out, Pan, Square)
--   edit        what was done, as parsed back by the bot: `zoom 2`, `pan left`, `square`,
--               `region 1,5,9`, `mask`

CREATE TABLE job_kinds (
    name TEXT PRIMARY KEY
);

INSERT INTO job_kinds (name) VALUES
    ('imagine'), ('reroll'), ('variation'), ('upscale'),
    ('zoom'), ('pan'), ('square'), ('region');

CREATE TABLE jobs_new (
    seq               INTEGER PRIMARY KEY,
    id                TEXT NOT NULL UNIQUE,
    guild_id          INTEGER,                  -- NULL for direct messages
    channel_id        INTEGER NOT NULL,
    user_id           INTEGER NOT NULL,
    kind              TEXT NOT NULL REFERENCES job_kinds (name),
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
    mode              TEXT NOT NULL DEFAULT 'txt2img',
    init_image        TEXT,                     -- sha256 of the picture to start from or edit
    mask_image        TEXT,
    box               TEXT,
    edit              TEXT,
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
    deleted_at        REAL,
    delivery_attempts INTEGER NOT NULL DEFAULT 0,
    delivery_error    TEXT
);

INSERT INTO jobs_new (
    seq, id, guild_id, channel_id, user_id, kind, parent_job, parent_index, prompt, negative,
    model, sampler, width, height, steps, guidance, strength, seed, count, mode, init_image,
    status, error, nsfw_allowed, application_id, interaction_token, attachment_limit, message_id,
    created_at, started_at, finished_at, delivered_at, deleted_at, delivery_attempts,
    delivery_error)
SELECT
    seq, id, guild_id, channel_id, user_id, kind, parent_job, parent_index, prompt, negative,
    model, sampler, width, height, steps, guidance, strength, seed, count,
    CASE WHEN init_image IS NULL THEN 'txt2img' ELSE 'img2img' END, init_image,
    status, error, nsfw_allowed, application_id, interaction_token, attachment_limit, message_id,
    created_at, started_at, finished_at, delivered_at, deleted_at, delivery_attempts,
    delivery_error
FROM jobs;

DROP TRIGGER jobs_fts_insert;
DROP TRIGGER jobs_fts_delete;
DROP TRIGGER jobs_fts_update;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;

-- The indexes and full-text triggers went with the old table.
CREATE INDEX jobs_guild_created ON jobs (guild_id, created_at DESC);
CREATE INDEX jobs_user_created ON jobs (user_id, created_at DESC);
CREATE INDEX jobs_unfinished ON jobs (created_at)
    WHERE status IN ('queued', 'running')
       OR (status = 'done' AND delivered_at IS NULL AND delivery_error IS NULL);
CREATE INDEX jobs_parent ON jobs (parent_job) WHERE parent_job IS NOT NULL;
CREATE INDEX jobs_history ON jobs (guild_id, status, created_at, id, channel_id, user_id);
CREATE INDEX jobs_history_user ON jobs (guild_id, user_id, status, created_at, channel_id);
CREATE INDEX jobs_channel ON jobs (channel_id, guild_id, status, id);

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
