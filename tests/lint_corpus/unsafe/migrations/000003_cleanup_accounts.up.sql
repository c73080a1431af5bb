-- Business justification: TICKET-201 remove the unused archive data.
-- migrator:allow MIG006 column unused since release 4.2 (TICKET-150); data archived to S3
ALTER TABLE accounts DROP COLUMN name;
DROP TABLE bills; -- migrator:allow ban-drop-table replaced by the ledger service, exported in TICKET-151
DELETE FROM accounts; -- migrator:allow MIG010
-- migrator:allow MIG099 typo in the rule id
-- migrator:allow MIG008 nothing is renamed here
UPDATE accounts SET region = 'us';
/* migrator:allow MIG010,MIG001 every account moves to the US region (TICKET-152) */
UPDATE accounts
   SET region = 'us';
SELECT 'migrator:allow MIG010 in a string is not a comment';
UPDATE accounts SET region = 'eu';
ALTER TABLE accounts SET UNLOGGED;
