-- Business justification: clinical notes with audit trigger (TICKET-400).
/* Outer comment /* nested: DROP TABLE notes; BEGIN; */ still the outer comment;
   UPDATE notes SET body = ''; */
CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL DEFAULT '', updated_at TIMESTAMPTZ);
INSERT INTO notes (id, body) VALUES (1, 'BEGIN; DROP TABLE notes; COMMIT;'), (2, $q$ VACUUM; -- not SQL $q$);
CREATE FUNCTION notes_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    -- ROLLBACK; inside the body is plpgsql, not this file's transaction control
    RETURN NEW;
END;
$$;
CREATE FUNCTION note_len(n notes) RETURNS int LANGUAGE sql
BEGIN ATOMIC
    SELECT CASE WHEN n.body IS NULL THEN 0 ELSE length(n.body) END;
END;
DO $do$
BEGIN
    PERFORM 1; COMMIT;
END
$do$;
