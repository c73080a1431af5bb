-- Down: reverse 000001
DROP TRIGGER IF EXISTS trg_patients_created ON patients;
DROP FUNCTION IF EXISTS set_created_at();
DROP INDEX IF EXISTS idx_patients_email;
DROP TABLE IF EXISTS patients;
