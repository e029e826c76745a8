-- 🗑️ removes one message: a picture posted alone by `U<n>`. Each removal is kept here, by message,
-- once Discord has confirmed it; the job, its grid and its other pictures' messages stay as they
-- were. (jobs.deleted_at marked the whole job when any one such message was removed, and before
-- the removal had succeeded; it is no longer written or shown.)
CREATE TABLE deleted_messages (
    message_id INTEGER PRIMARY KEY,
    job_id     TEXT NOT NULL REFERENCES jobs (id),
    idx        INTEGER NOT NULL,                -- the picture the message showed, from 0
    deleted_by INTEGER NOT NULL,                -- who pressed 🗑️
    deleted_at REAL NOT NULL
);

CREATE INDEX deleted_messages_job ON deleted_messages (job_id, idx);
