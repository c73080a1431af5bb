-- Migration: 000008_add_email_verification_index (rollback)
-- Business justification: reverts 000008.

DROP INDEX IF EXISTS idx_user_email_unverified;
