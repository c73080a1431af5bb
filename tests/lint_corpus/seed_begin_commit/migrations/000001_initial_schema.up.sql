-- Business justification: seed schema for AskFrank users.
CREATE TABLE tbl_user (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    email VARCHAR(255) NOT NULL UNIQUE
);
