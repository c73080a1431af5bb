-- Migration: 000002_add_patient_table (rollback)
-- Business justification: reverts 000002.

-- Remove indexes
DROP INDEX IF EXISTS idx_patients_mrn;
DROP INDEX IF EXISTS idx_patients_user_id;

-- Remove patient table
DROP TABLE IF EXISTS patients;
