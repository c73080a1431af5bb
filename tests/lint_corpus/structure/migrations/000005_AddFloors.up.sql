-- Business justification: floors.
CREATE TABLE floors (id int PRIMARY KEY);
