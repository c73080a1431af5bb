-- Migration: 000008_add_user_full_name (rollback)
-- Business justification: reverts 000008; first_name and last_name still hold the data.

ALTER TABLE tbl_user DROP COLUMN IF EXISTS full_name;
