-- Migration: 000006_add_user_last_login
-- Business justification: security monitoring flags dormant accounts by last login (seed example).
-- Patient data affected: no
-- The index comes in 000007: CREATE INDEX CONCURRENTLY must be alone in its file for golang-migrate.

ALTER TABLE tbl_user ADD COLUMN last_login TIMESTAMP;
