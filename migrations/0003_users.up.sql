-- pm schema, version 3: people.
--
-- users holds what the nodes know about each user of a tenant: the name and
-- email claims of the tokens the user connected with (the newest of each
-- that a token carried). A node writes a user's row when a connection is
-- accepted and the claims differ from the row; nothing else refers to it,
-- so a user without a row is a user who never connected with those claims.
-- Per tenant: one person may be a user of several tenants, under other names.
CREATE TABLE users (
    tenant_id  text        NOT NULL,
    user_id    uuid        NOT NULL,
    name       text        NOT NULL DEFAULT '' CHECK (char_length(name) <= 200),
    email      text        NOT NULL DEFAULT '' CHECK (octet_length(email) <= 254),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id)
);

-- a user's projects (ListProjectsRequest); the primary key leads with the project
CREATE INDEX project_members_user_idx ON project_members (tenant_id, user_id);

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON users
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''))
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), ''));

REVOKE ALL ON users FROM PUBLIC;
