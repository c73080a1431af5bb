-- Migration: 000001_create_patients
-- Business justification: TICKET-101 store patients for the scheduling feature.
-- Patient data affected: no (new table)

CREATE TABLE patients (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    first_name TEXT NOT NULL,
    medical_record_number TEXT UNIQUE,
    email TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- A new table: a plain index cannot block anyone.
CREATE INDEX idx_patients_email ON patients (email);

CREATE FUNCTION set_created_at() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    NEW.created_at := now(); -- semicolons; inside; the body
    RETURN NEW;
END;
$fn$;

CREATE TRIGGER trg_patients_created BEFORE INSERT ON patients
    FOR EACH ROW EXECUTE FUNCTION set_created_at();

INSERT INTO patients (first_name, email) VALUES ('Test', 'test.patient@example.com');
