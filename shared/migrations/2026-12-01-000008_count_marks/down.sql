DROP TABLE inventory.count_marks;
