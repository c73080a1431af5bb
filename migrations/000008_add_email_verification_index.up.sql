-- Migration: 000008_add_email_verification_index
-- Business justification: the reminder job scans unverified accounts nightly (seed naming example).
-- Patient data affected: no

CREATE INDEX idx_user_email_unverified ON tbl_user(created_at) WHERE NOT email_verified;
