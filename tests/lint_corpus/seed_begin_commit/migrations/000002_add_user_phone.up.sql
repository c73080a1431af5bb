-- Business justification: the seed guide's example (phone numbers for 2FA).
BEGIN;

-- Multiple related changes
ALTER TABLE tbl_user ADD COLUMN phone VARCHAR(20);
CREATE INDEX idx_user_phone ON tbl_user(phone);
UPDATE tbl_user SET phone = '' WHERE phone IS NULL;
ALTER TABLE tbl_user ALTER COLUMN phone SET NOT NULL;

COMMIT;
