-- Business justification: TICKET-105 track visit status for billing.
CREATE TYPE visit_status AS ENUM ('planned', 'done');
CREATE TABLE visits (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    patient_id UUID NOT NULL REFERENCES patients (id),
    status visit_status NOT NULL DEFAULT 'planned'
);
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'billing_reader') THEN
        RAISE NOTICE 'BEGIN; COMMIT; no role yet';
    END IF;
END
$$;
UPDATE visits SET status = 'done' WHERE status = 'planned';
