/* Business justification: TICKET-104 look patients up by phone at the front desk.
   /* nested comment: CREATE INDEX here is not SQL */ still a comment */
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_patients_phone ON patients (phone);
