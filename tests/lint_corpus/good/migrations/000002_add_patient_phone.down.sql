ALTER TABLE patients DROP CONSTRAINT IF EXISTS patients_phone_not_null;
ALTER TABLE patients DROP COLUMN IF EXISTS phone;
