-- Business justification: misc.
CREATE TABLE desks (id int PRIMARY KEY);
