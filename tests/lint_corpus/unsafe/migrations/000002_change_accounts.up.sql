-- Business justification: TICKET-200 billing rework.
ALTER TABLE accounts ADD COLUMN region TEXT NOT NULL;
ALTER TABLE accounts ALTER COLUMN name SET NOT NULL;
CREATE INDEX idx_accounts_name ON accounts (name);
ALTER TABLE invoices ADD CONSTRAINT fk_invoices_account FOREIGN KEY (account_id) REFERENCES accounts (id);
ALTER TABLE invoices ADD CONSTRAINT chk_amount CHECK (amount >= 0);
ALTER TABLE invoices ALTER COLUMN amount TYPE BIGINT;
ALTER TABLE accounts DROP COLUMN legacy;
DROP TABLE audit_tmp;
ALTER TABLE accounts RENAME COLUMN status TO state;
ALTER TABLE invoices RENAME TO bills;
UPDATE accounts SET region = 'eu';
DELETE FROM bills;
ALTER TABLE accounts ADD COLUMN token UUID DEFAULT gen_random_uuid();
ALTER TABLE accounts ADD CONSTRAINT uq_accounts_name UNIQUE (name);
DROP INDEX idx_accounts_name;
TRUNCATE bills CASCADE;
DROP DATABASE legacy_billing;
