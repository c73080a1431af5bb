-- Business justification: doctors directory.
CREATE SCHEMA IF NOT EXISTS clinic;
CREATE TABLE doctors (id BIGINT PRIMARY KEY, name TEXT NOT NULL, license TEXT);
CREATE INDEX idx_doctors_name ON doctors (name);
CREATE SEQUENCE doctor_badge_seq;
CREATE VIEW active_doctors AS SELECT id, name FROM doctors;
CREATE TYPE specialty AS ENUM ('gp', 'cardiology');
CREATE EXTENSION IF NOT EXISTS pgcrypto;
