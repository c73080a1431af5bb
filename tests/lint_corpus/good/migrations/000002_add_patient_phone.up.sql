-- Business justification: TICKET-102 patients asked for SMS reminders.
ALTER TABLE patients ADD COLUMN phone TEXT;
ALTER TABLE patients ADD CONSTRAINT patients_phone_not_null CHECK (phone IS NOT NULL) NOT VALID;
