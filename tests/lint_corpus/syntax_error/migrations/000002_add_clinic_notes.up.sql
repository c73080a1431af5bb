-- Business justification: free-text notes per clinic.
ALTER TABLE clinics ADD COLUMN notes TEXT;
CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
  RETURN 1;
END;
