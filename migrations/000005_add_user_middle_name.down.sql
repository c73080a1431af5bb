-- Migration: 000005_add_user_middle_name (rollback)
-- Business justification: reverts 000005.

ALTER TABLE tbl_user DROP COLUMN IF EXISTS middle_name;
