-- pm schema, version 2: a project's items in load order.
--
-- A load (GetWorkItemsRequest) reads a project's items ordered by
-- (position, id) in pages, each page starting after the last row of the one
-- before: WHERE (position, id) > ($position, $id) ORDER BY position, id
-- LIMIT n. This index serves that keyset for full loads and, where the
-- planner prefers it to work_items_revision_idx, for deltas; position is
-- COLLATE "C", so the index orders keys byte-wise, as positions compare.
-- Tombstones stay in it: deltas return them.
CREATE INDEX work_items_position_idx ON work_items (tenant_id, project_id, position, id);
