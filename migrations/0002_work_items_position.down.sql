-- Drops the index of pm schema version 2.
DROP INDEX IF EXISTS work_items_position_idx;
