-- Migration: 000009_add_email_verification_index (rollback)
-- Business justification: reverts 000009.

DROP INDEX CONCURRENTLY IF EXISTS idx_user_email_unverified;
