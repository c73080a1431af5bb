-- Migration: 000002_add_contact_relation
-- Business justification: TODO: why this change is needed (ticket, business reason)
ALTER TABLE contacts ADD COLUMN relation TEXT;
