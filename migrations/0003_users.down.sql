-- Drops pm schema version 3: the users table and every row in it, and the
-- index of a user's projects.
DROP INDEX IF EXISTS project_members_user_idx;
DROP TABLE IF EXISTS users;
