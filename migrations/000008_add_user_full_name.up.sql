-- Migration: 000008_add_user_full_name
-- Business justification: the patient portal greets users by full name (seed data-migration example).
-- Patient data affected: no (derived from existing user names)
-- Data transformation: full_name = first_name || ' ' || last_name for every existing user.
-- migrator:allow-file MIG002 tbl_user had under 10k rows when this shipped: the NOT NULL scan is instantaneous

-- Add new column
ALTER TABLE tbl_user ADD COLUMN full_name VARCHAR(200);

-- Populate from existing data
UPDATE tbl_user SET full_name = CONCAT(first_name, ' ', last_name)
WHERE full_name IS NULL;

-- Make it required
ALTER TABLE tbl_user ALTER COLUMN full_name SET NOT NULL;
