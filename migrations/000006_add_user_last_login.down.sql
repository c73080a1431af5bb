-- Migration: 000006_add_user_last_login (rollback)
-- Business justification: reverts 000006.

ALTER TABLE tbl_user DROP COLUMN IF EXISTS last_login;
