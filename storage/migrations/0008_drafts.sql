-- `--draft` jobs and Enhance (SPEC §3.2).
--   draft   a draft (a fast run: SD_DRAFT_MODEL, or its model in fewer steps): the model it
--           stands in for, on which Enhance renders its pictures at full quality; NULL for any
--           other job. Jobs made from a draft (🔄, V<n>, edits) are drafts of the same model.
--   enhance the kind of the job Enhance makes: one picture of a draft, at full quality, from the
--           same seed (img2img on the full model).

INSERT INTO job_kinds (name) VALUES ('enhance');

ALTER TABLE jobs ADD COLUMN draft TEXT;
