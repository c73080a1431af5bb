-- Business justification: search doctors by license number.
ALTER TABLE doctors ADD COLUMN license_state TEXT;
ALTER TABLE doctors ADD CONSTRAINT chk_license CHECK (license <> '') NOT VALID;
CREATE INDEX CONCURRENTLY idx_doctors_license ON doctors (license);
