-- Business justification: beds.
CREATE TABLE beds (id int PRIMARY KEY);
