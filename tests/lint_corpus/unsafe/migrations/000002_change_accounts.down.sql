-- migrator:allow-file MIG012 the billing rework cannot be reverted schema-wise; restore from backup
ALTER TABLE bills RENAME TO invoices;
ALTER TABLE accounts DROP COLUMN IF EXISTS region;
ALTER TABLE accounts DROP COLUMN IF EXISTS token;
