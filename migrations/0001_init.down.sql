-- Drops the pm schema, version 1, and every row in it.
DROP TABLE IF EXISTS activity_log;
DROP TABLE IF EXISTS project_members;
DROP TABLE IF EXISTS work_items;
DROP TABLE IF EXISTS project_revisions;
