-- A server's jobs are shown only to the people who can view the channel they were made in, and
-- to their author (SPEC §6 Visibility). The history indexes also hold the channel and the author,
-- so a page of a server's jobs is still found from an index alone; and the jobs of the channels
-- a member can view are counted from an index that has them side by side.

DROP INDEX jobs_history;
CREATE INDEX jobs_history ON jobs (guild_id, status, created_at, id, channel_id, user_id);

DROP INDEX jobs_history_user;
CREATE INDEX jobs_history_user ON jobs (guild_id, user_id, status, created_at, channel_id);

CREATE INDEX jobs_channel ON jobs (channel_id, guild_id, status, id);
