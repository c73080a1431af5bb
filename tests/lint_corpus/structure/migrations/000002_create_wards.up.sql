-- Business justification: wards.
CREATE TABLE wards (id int PRIMARY KEY);
