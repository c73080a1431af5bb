-- Migration: 000004_add_user_phone (rollback)
-- Business justification: reverts 000004.

DROP INDEX IF EXISTS idx_user_phone;
ALTER TABLE tbl_user DROP COLUMN IF EXISTS phone;
