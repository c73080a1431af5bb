-- Business justification: chairs.
CREATE TABLE chairs (id int PRIMARY KEY);
