-- Adds the preferred language.
ALTER TABLE contacts ADD COLUMN language TEXT;
-- Business justification: too late, the header ended at the first statement.
