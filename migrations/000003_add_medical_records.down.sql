-- Migration: 000003_add_medical_records (rollback)
-- Business justification: reverts 000003.

DROP INDEX IF EXISTS idx_medical_records_type;
DROP INDEX IF EXISTS idx_medical_records_patient;
DROP TABLE IF EXISTS medical_records;
