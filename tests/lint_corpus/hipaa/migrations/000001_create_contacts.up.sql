-- Business justification: emergency contacts for patients (TICKET-300).
-- Author: jane.roe@askfrank-health.com
CREATE TABLE contacts (id BIGINT PRIMARY KEY, ssn TEXT, email TEXT, phone TEXT, mrn TEXT, note TEXT);
INSERT INTO contacts VALUES (1, '123-45-6789', 'john.smith@gmail.com', '(415) 555-2671', 'MRN-0048213', 'ok');
INSERT INTO contacts VALUES (2, '000-12-3456', 'test@example.com', '555-0142', 'MRN-12', 'fictional values');
INSERT INTO contacts (id, note) VALUES (3, 'call +14155552671 after 5pm');
CREATE ROLE reporting LOGIN PASSWORD 'S3cret!pass';
INSERT INTO contacts (id, note) VALUES (4, 'key AKIAIOSFODNN7EXAMPLE');
INSERT INTO contacts (id, note) VALUES (5, 'postgres://admin:hunter22@db.internal/app');
-- migrator:allow MIG201 synthetic SSN from the test-data generator (TICKET-301)
INSERT INTO contacts (id, ssn) VALUES (6, '219-09-9999');
