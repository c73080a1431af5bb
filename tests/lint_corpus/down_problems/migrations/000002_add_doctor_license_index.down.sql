-- The down forgets the index and the constraint.
ALTER TABLE doctors DROP COLUMN license_state;
DELETE FROM doctors;
