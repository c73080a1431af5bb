DROP VIEW active_doctors;
DROP TABLE doctors;
DROP TYPE IF EXISTS specialty;
