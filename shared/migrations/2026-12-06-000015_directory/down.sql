DROP TABLE directory.sources, directory.memberships, directory.groups, directory.users;
