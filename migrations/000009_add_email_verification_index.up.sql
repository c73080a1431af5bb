-- Migration: 000009_add_email_verification_index
-- Business justification: the reminder job scans unverified accounts nightly (seed naming example).
-- Patient data affected: no

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_user_email_unverified ON tbl_user(created_at) WHERE NOT email_verified;
