-- Business justification: clinics for the scheduling feature.
CREATE TABLE clinics (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL
);
INSERT INTO clinics (name) VALUES ('Main € site');
CREAT INDEX idx_clinics_name ON clinics (name);
