-- A counter moved by every commit that may take access away from someone (tokens or users
-- deleted, members changed, ownership moved): long-lived sessions check their access again when
-- it moves.
ALTER TABLE meta ADD COLUMN access INTEGER NOT NULL DEFAULT 0;
