DROP TABLE IF EXISTS audit_tmp, invoices, accounts;
