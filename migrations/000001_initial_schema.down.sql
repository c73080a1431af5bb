-- Migration: 000001_initial_schema (rollback)
-- Business justification: reverts the initial schema; only for empty development databases.

DROP TRIGGER IF EXISTS trg_user_updated_at ON tbl_user;
DROP FUNCTION IF EXISTS set_updated_at();
DROP INDEX IF EXISTS idx_audit_log_entity;
DROP TABLE IF EXISTS tbl_audit_log;
DROP INDEX IF EXISTS idx_user_session_user_id;
DROP TABLE IF EXISTS tbl_user_session;
DROP TABLE IF EXISTS tbl_user;
DROP TYPE IF EXISTS user_role;
