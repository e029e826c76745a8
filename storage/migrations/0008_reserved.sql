-- Placeholder: migration 0008 belongs to another branch. This empty file only keeps the numbers
-- of this branch without a gap so that its tests run; it must be dropped when that branch's 0008
-- is merged (a database migrated with it would otherwise skip the real 0008).
SELECT 1;
