-- pm schema, version 1.
--
-- Every primary key leads with tenant_id, so the schema can be distributed by
-- tenant without a rewrite. Every table forces row-level security: a
-- transaction sees and writes only the rows of the tenant it selected with
--   SELECT set_config('app.tenant_id', '<tenant>', true)
-- and nothing at all when it selected none. Queries still filter by tenant_id
-- themselves; the policy is the safety net. Superusers and BYPASSRLS roles
-- skip the policy, which is why the application must not connect as one.

-- project_revisions is each project's revision counter. Every work item write
-- in a project updates its row first: the row lock orders the writes of a
-- project in commit order and makes revisions gap-free.
CREATE TABLE project_revisions (
    tenant_id  text        NOT NULL,
    project_id uuid        NOT NULL,
    revision   bigint      NOT NULL CHECK (revision >= 1),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, project_id)
);

-- work_items holds projects, epics, stories and tasks. A project's project_id
-- is its own id. Deleted items stay as tombstones (deleted_at set).
CREATE TABLE work_items (
    tenant_id    text        NOT NULL,
    id           uuid        NOT NULL,
    project_id   uuid        NOT NULL,
    parent_id    uuid,
    item_type    text        NOT NULL CHECK (item_type IN ('project', 'epic', 'story', 'task')),
    title        text        NOT NULL CHECK (char_length(title) BETWEEN 1 AND 500),
    description  text        NOT NULL DEFAULT '' CHECK (octet_length(description) <= 65536),
    status       text        NOT NULL CHECK (status IN ('backlog', 'todo', 'in_progress', 'review', 'done')),
    priority     text        NOT NULL CHECK (priority IN ('low', 'medium', 'high', 'critical')),
    assignee_id  uuid,
    -- fractional-index key, compared byte-wise
    position     text        COLLATE "C" NOT NULL CHECK (octet_length(position) BETWEEN 1 AND 512),
    story_points integer     CHECK (story_points BETWEEN 0 AND 1000),
    version      bigint      NOT NULL CHECK (version >= 1),
    revision     bigint      NOT NULL CHECK (revision >= 1),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz,
    created_by   uuid        NOT NULL,
    updated_by   uuid        NOT NULL,
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, project_id) REFERENCES project_revisions (tenant_id, project_id),
    FOREIGN KEY (tenant_id, parent_id) REFERENCES work_items (tenant_id, id),
    -- only a project has no parent, and a project is its own project
    CHECK ((item_type = 'project') = (parent_id IS NULL)),
    CHECK (item_type <> 'project' OR project_id = id),
    CHECK (parent_id IS DISTINCT FROM id)
);

-- sync: items changed after a revision
CREATE INDEX work_items_revision_idx ON work_items (tenant_id, project_id, revision);
-- live children of an item (delete check)
CREATE INDEX work_items_children_idx ON work_items (tenant_id, parent_id) WHERE deleted_at IS NULL;
-- a board column in order (default position of a new item)
CREATE INDEX work_items_column_idx ON work_items (tenant_id, project_id, status, position) WHERE deleted_at IS NULL;
-- items changed after a time (since_timestamp)
CREATE INDEX work_items_updated_idx ON work_items (tenant_id, project_id, updated_at);

-- project_members holds each user's role in a project.
CREATE TABLE project_members (
    tenant_id  text        NOT NULL,
    project_id uuid        NOT NULL,
    user_id    uuid        NOT NULL,
    role       text        NOT NULL CHECK (role IN ('viewer', 'editor', 'admin')),
    added_at   timestamptz NOT NULL DEFAULT now(),
    added_by   uuid        NOT NULL,
    PRIMARY KEY (tenant_id, project_id, user_id),
    FOREIGN KEY (tenant_id, project_id) REFERENCES project_revisions (tenant_id, project_id)
);

-- activity_log records every change: a work item change (work_item_id set)
-- or a membership change (member_user_id set). changes is a JSON array of
-- {"field", "old", "new"} objects (pm.FieldChange).
CREATE TABLE activity_log (
    tenant_id      text        NOT NULL,
    id             bigint      GENERATED ALWAYS AS IDENTITY,
    project_id     uuid        NOT NULL,
    work_item_id   uuid,
    member_user_id uuid,
    actor_id       uuid        NOT NULL,
    action         text        NOT NULL CHECK (action IN ('created', 'updated', 'deleted',
                                   'member_added', 'member_role_changed', 'member_removed')),
    changes        jsonb       NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(changes) = 'array'),
    revision       bigint      NOT NULL CHECK (revision >= 1),
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, project_id) REFERENCES project_revisions (tenant_id, project_id),
    FOREIGN KEY (tenant_id, work_item_id) REFERENCES work_items (tenant_id, id),
    CHECK ((work_item_id IS NULL) <> (member_user_id IS NULL))
);

-- a project's history, newest first
CREATE INDEX activity_log_project_idx ON activity_log (tenant_id, project_id, id DESC);
-- an item's history, newest first
CREATE INDEX activity_log_item_idx ON activity_log (tenant_id, work_item_id, id DESC) WHERE work_item_id IS NOT NULL;

-- Row-level security: forced, so that it applies to the tables' owner too.
ALTER TABLE project_revisions ENABLE ROW LEVEL SECURITY;
ALTER TABLE project_revisions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON project_revisions
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

ALTER TABLE work_items ENABLE ROW LEVEL SECURITY;
ALTER TABLE work_items FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON work_items
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

ALTER TABLE project_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE project_members FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON project_members
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

ALTER TABLE activity_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE activity_log FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON activity_log
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

-- Only the owner (the role that ran the migrations) and roles it grants to
-- may use the tables.
REVOKE ALL ON project_revisions, work_items, project_members, activity_log FROM PUBLIC;
