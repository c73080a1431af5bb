-- Business justification: TICKET-103 every patient now has a phone (backfilled by TICKET-102).
ALTER TABLE patients VALIDATE CONSTRAINT patients_phone_not_null;
-- PostgreSQL 12+ uses the validated check instead of scanning the table.
ALTER TABLE patients ALTER COLUMN phone SET NOT NULL;
