-- Migration: 000007_add_user_last_login_index
-- Business justification: the dormant-account report filters on last_login (seed example).
-- Patient data affected: no
-- CONCURRENTLY: tbl_user takes writes during the build; this runs outside a transaction.

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_user_last_login ON tbl_user(last_login);
