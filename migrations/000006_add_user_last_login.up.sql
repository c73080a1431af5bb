-- Migration: 000006_add_user_last_login
-- Business justification: security monitoring flags dormant accounts by last login (seed example).
-- Patient data affected: no

ALTER TABLE tbl_user ADD COLUMN last_login TIMESTAMP;
CREATE INDEX CONCURRENTLY idx_user_last_login ON tbl_user(last_login);
