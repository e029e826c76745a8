-- /history and /recall on large servers: indexes that page and count a server's (or a DM user's)
-- finished jobs from the index alone, one-letter prefixes in the full-text index, and the texts of
-- history searches. `python bench/history.py` measures the queries these serve.

CREATE INDEX jobs_history ON jobs (guild_id, status, created_at, id);
CREATE INDEX jobs_history_user ON jobs (guild_id, user_id, status, created_at);

-- Autocomplete searches from the first letter typed; without a one-letter prefix index, `a*`
-- merges the lists of every word starting with "a". Same table otherwise, rebuilt from jobs.
DROP TRIGGER jobs_fts_insert;
DROP TRIGGER jobs_fts_delete;
DROP TRIGGER jobs_fts_update;
DROP TABLE jobs_fts;

CREATE VIRTUAL TABLE jobs_fts USING fts5 (
    prompt,
    content = 'jobs',
    content_rowid = 'rowid',
    tokenize = 'unicode61 remove_diacritics 2',
    prefix = '1 2 3'
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

INSERT INTO jobs_fts (jobs_fts) VALUES ('rebuild');

-- The text of a /history search, so its ◀ ▶ buttons carry a short key instead of the text
-- (a custom id holds at most 100 characters).
CREATE TABLE history_searches (
    key        TEXT PRIMARY KEY,                -- the first 16 hex digits of the text's SHA-256
    text       TEXT NOT NULL,
    created_at REAL NOT NULL
);
