-- The team gallery serves pictures by their SHA-256 (`/images/<sha256>.png`) and decides who may
-- see one from the jobs that hold it: find those jobs from the hash without reading every image.

CREATE INDEX images_sha256 ON images (sha256);
