-- Migration: 000007_add_user_last_login_index (rollback)
-- Business justification: reverts 000007.

DROP INDEX CONCURRENTLY IF EXISTS idx_user_last_login;
