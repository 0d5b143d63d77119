import { useState } from "preact/hooks";
import { describeError, type ProjectStateManager } from "../client";
import { ProjectRole, type ProjectMember } from "../gen/pm/v1/messages_pb";
import { Dialog } from "./dialog";
import { hue, initials, roleLabel } from "./labels";
import type { Editing } from "./project";
import { useToast } from "./toasts";

const ROLES = [ProjectRole.VIEWER, ProjectRole.EDITOR, ProjectRole.ADMIN] as const;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** MembersPanel lists a project's members; admins add, re-role and remove them. */
export function MembersPanel({ manager, projectId, editing, onClose }: { manager: ProjectStateManager; projectId: string; editing: Editing; onClose: () => void }) {
  const toast = useToast();
  const members = manager.members(projectId) ?? [];
  const me = manager.client.claims.sub;
  const [userId, setUserId] = useState("");
  const [role, setRole] = useState<ProjectRole>(ProjectRole.EDITOR);
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const run = (p: Promise<unknown>, done?: () => void) => {
    setBusy(true);
    p.then(
      () => {
        setBusy(false);
        setError("");
        done?.();
      },
      (err: unknown) => {
        setBusy(false);
        setError(describeError(err));
      },
    );
  };
  const add = (e: Event) => {
    e.preventDefault();
    if (!UUID.test(userId.trim())) {
      setError("A user id is a UUID, like 3f2b…-….");
      return;
    }
    run(manager.addMember(projectId, userId.trim(), role), () => {
      setUserId("");
      toast("info", "Member added.");
    });
  };
  return (
    <Dialog title="Members" testid="members-panel" onClose={onClose} wide>
      {error && (
        <p class="notice notice-error" role="alert" data-testid="members-error">
          {error}
        </p>
      )}
      <ul class="members" aria-label="Project members">
        {members.map((m) => {
          const name = m.displayName || m.email || m.userId;
          return (
            <li key={m.userId} class="member" data-testid="member" data-user={m.userId}>
              <span class={`avatar hue-${hue(m.userId)}`} aria-hidden="true">
                {initials(name)}
              </span>
              <span class="member-text">
                <span class="member-name">
                  {name}
                  {m.userId === me && <span class="muted"> (you)</span>}
                </span>
                <span class="muted member-sub">{memberDetail(m, name)}</span>
              </span>
              {editing.isAdmin ? (
                <>
                  <label class="sr-only" for={`role-${m.userId}`}>
                    Role of {name}
                  </label>
                  <select
                    id={`role-${m.userId}`}
                    value={String(m.role)}
                    disabled={busy}
                    onChange={(e) => run(manager.addMember(projectId, m.userId, Number(e.currentTarget.value)))}
                  >
                    {ROLES.map((r) => (
                      <option key={r} value={String(r)}>
                        {roleLabel[r]}
                      </option>
                    ))}
                  </select>
                  <button type="button" class="button danger-subtle" disabled={busy} aria-label={`Remove ${name}`} onClick={() => run(manager.removeMember(projectId, m.userId))}>
                    Remove
                  </button>
                </>
              ) : (
                <span class="badge">{roleLabel[m.role] ?? "Member"}</span>
              )}
            </li>
          );
        })}
      </ul>
      {editing.isAdmin && (
        <form class="inline-form add-member" onSubmit={add} data-testid="add-member-form">
          <label for="member-user">User id</label>
          <input id="member-user" type="text" placeholder="00000000-0000-4000-8000-000000000000" value={userId} onInput={(e) => setUserId(e.currentTarget.value)} />
          <label for="member-role">Role</label>
          <select id="member-role" value={String(role)} onChange={(e) => setRole(Number(e.currentTarget.value))}>
            {ROLES.map((r) => (
              <option key={r} value={String(r)}>
                {roleLabel[r]}
              </option>
            ))}
          </select>
          <button type="submit" class="button primary" disabled={busy || !userId.trim()}>
            Add member
          </button>
        </form>
      )}
    </Dialog>
  );
}

/** memberDetail is the line under a member's name: the email, the user id, or that they never signed in. */
function memberDetail(m: ProjectMember, name: string): string {
  if (name === m.userId) return "Has not signed in yet";
  return m.displayName && m.email ? m.email : m.userId;
}
