-- Delivery that ends: how often showing a finished job's result was tried, and, once Atelier
-- stopped trying (Discord refused for good: the channel is gone, the bot may no longer post in
-- it), why. Such a job is no longer "unfinished": a start does not try it again.

ALTER TABLE jobs ADD COLUMN delivery_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN delivery_error TEXT;

DROP INDEX jobs_unfinished;
CREATE INDEX jobs_unfinished ON jobs (created_at)
    WHERE status IN ('queued', 'running')
       OR (status = 'done' AND delivered_at IS NULL AND delivery_error IS NULL);
