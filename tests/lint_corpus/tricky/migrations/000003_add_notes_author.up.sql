-- Business justification: record who wrote each note (TICKET-402).
BEGIN;
ALTER TABLE notes ADD COLUMN author TEXT;
