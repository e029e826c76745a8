-- Pictures as prompts (SPEC §3.2): ControlNet, image references, /blend and /describe.
--   control           the ControlNet's control: canny, depth, pose, lineart, scribble, tile, as-is
--   control_image     sha256 of the uploaded control picture (the map is made from it again
--                     when a reroll or a variation keeps the control)
--   control_map       sha256 of the map the ControlNet read, stored when the job finishes
--   control_weight    --cw, 0–2
--   reference_images  sha256s of the reference pictures, comma-separated (`reference`, or
--                     /blend's pictures, in order)
--   image_weight      --iw, 0–3
--   style_weight      --sw with --sref (a style reference); NULL: an image reference
--   suggestions       /describe's prompt suggestions, one a line
INSERT INTO job_kinds (name) VALUES ('blend'), ('describe');

ALTER TABLE jobs ADD COLUMN control TEXT;
ALTER TABLE jobs ADD COLUMN control_image TEXT;
ALTER TABLE jobs ADD COLUMN control_map TEXT;
ALTER TABLE jobs ADD COLUMN control_weight REAL;
ALTER TABLE jobs ADD COLUMN reference_images TEXT;
ALTER TABLE jobs ADD COLUMN image_weight REAL;
ALTER TABLE jobs ADD COLUMN style_weight REAL;
ALTER TABLE jobs ADD COLUMN suggestions TEXT;

-- Lists of what a server made leave out /describe's jobs (they made no pictures): the indexes
-- they are counted from hold the kind too, so counting still reads no rows.
DROP INDEX jobs_history;
DROP INDEX jobs_history_user;
DROP INDEX jobs_channel;
CREATE INDEX jobs_history ON jobs (guild_id, status, created_at, id, channel_id, user_id, kind);
CREATE INDEX jobs_history_user ON jobs (guild_id, user_id, status, created_at, channel_id, kind);
CREATE INDEX jobs_channel ON jobs (channel_id, guild_id, status, id, kind);
