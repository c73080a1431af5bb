-- Business justification: rooms.
CREATE TABLE rooms (id int PRIMARY KEY);
