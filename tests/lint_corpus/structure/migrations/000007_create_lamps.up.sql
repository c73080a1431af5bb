-- Business justification: lamps.
CREATE TABLE lamps (id int PRIMARY KEY);
