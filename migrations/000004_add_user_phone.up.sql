-- Migration: 000004_add_user_phone
-- Business justification: SMS appointment reminders need a phone number per user (seed example,
-- kept with its own BEGIN/COMMIT: it runs with golang-migrate's dirty-flag protocol).
-- Patient data affected: no (user accounts only)
-- migrator:allow-file MIG114 the seed guide's transaction example, kept verbatim; it runs with the dirty-flag protocol
-- migrator:allow-file MIG003 tbl_user had under 10k rows when this shipped: the index builds in milliseconds
-- migrator:allow-file MIG002 same small table: the NOT NULL scan is instantaneous, no CHECK dance needed

BEGIN;

-- Multiple related changes
ALTER TABLE tbl_user ADD COLUMN phone VARCHAR(20);
CREATE INDEX idx_user_phone ON tbl_user(phone);
UPDATE tbl_user SET phone = '' WHERE phone IS NULL;
ALTER TABLE tbl_user ALTER COLUMN phone SET NOT NULL;

COMMIT;
