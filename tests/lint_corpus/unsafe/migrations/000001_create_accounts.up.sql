-- Business justification: accounts and invoices for billing.
CREATE TABLE accounts (id BIGINT PRIMARY KEY, name TEXT, legacy TEXT, status TEXT);
CREATE TABLE invoices (id BIGINT PRIMARY KEY, account_id BIGINT, amount NUMERIC);
CREATE TABLE audit_tmp (id BIGINT);
