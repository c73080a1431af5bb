-- Business justification: rebuild the bloated notes index (TICKET-401).
BEGIN;
CREATE INDEX CONCURRENTLY idx_notes_body ON notes (body);
COMMIT;
