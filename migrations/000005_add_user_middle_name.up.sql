-- Migration: 000005_add_user_middle_name
-- Business justification: legal names on prescriptions need the middle name (seed example).
-- Patient data affected: no

-- Safe column addition
ALTER TABLE tbl_user ADD COLUMN middle_name VARCHAR(50);
