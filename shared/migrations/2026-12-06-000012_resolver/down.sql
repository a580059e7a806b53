DROP TABLE resolver.conflicts;
