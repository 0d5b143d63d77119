import { useCallback, useEffect, useState } from "preact/hooks";
import { describeError, type ProjectStateManager, type WorkItemState } from "../client";
import { ActivityAction, type ActivityEntry, type FieldChange } from "../gen/pm/v1/messages_pb";
import { Dialog } from "./dialog";
import { actionLabel, ago, hue, initials, priorityInfo, statusInfo, typeInfo } from "./labels";

/** ActivityPanel shows a project's history, newest first, a page at a time. */
export function ActivityPanel({ manager, replica, onClose }: { manager: ProjectStateManager; replica: WorkItemState; onClose: () => void }) {
  return (
    <Dialog title="Activity" testid="activity-panel" onClose={onClose} wide>
      <ActivityList manager={manager} replica={replica} />
    </Dialog>
  );
}

const fieldLabel: Record<string, string> = {
  title: "title",
  description: "description",
  status: "status",
  priority: "priority",
  assignee_id: "assignee",
  parent_id: "parent",
  position: "position",
  story_points: "points",
  role: "role",
};

/** bySlug reads an enum value as the server writes it in a FieldChange ("in_progress") as its label. */
function bySlug(info: Record<number, { label: string; slug: string }>, v: string): string {
  return Object.values(info).find((x) => x.slug === v)?.label ?? v;
}

/** ActivityList pages through GetActivityRequest answers (of a project, or of one item). */
export function ActivityList({ manager, replica, workItemId }: { manager: ProjectStateManager; replica: WorkItemState; workItemId?: string }) {
  const [entries, setEntries] = useState<ActivityEntry[]>([]);
  const [next, setNext] = useState<string | null>("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const projectId = replica.projectId;
  const load = useCallback(
    (token: string) => {
      setBusy(true);
      manager.activity(projectId, { workItemId, pageToken: token, limit: 30 }).then(
        (page) => {
          setBusy(false);
          setEntries((e) => (token ? [...e, ...page.entries] : page.entries));
          setNext(page.nextPageToken || null);
          setError("");
        },
        (err: unknown) => {
          setBusy(false);
          setError(describeError(err));
        },
      );
    },
    [manager, projectId, workItemId],
  );
  useEffect(() => load(""), [load]);
  const name = (id: string) => manager.displayName(projectId, id);
  const value = (c: FieldChange, v: string) => {
    if (!v) return "—";
    switch (c.fieldName) {
      case "assignee_id":
        return name(v);
      case "parent_id":
        return replica.get(v)?.title ?? v.slice(0, 8);
      case "status":
        return bySlug(statusInfo, v);
      case "priority":
        return bySlug(priorityInfo, v);
      case "item_type":
        return bySlug(typeInfo, v);
      default:
        return v;
    }
  };
  return (
    <div class="activity" data-testid="activity-list">
      {error && (
        <p class="notice notice-error" role="alert">
          {error}
        </p>
      )}
      {entries.length === 0 && !busy && !error && <p class="muted">No activity yet.</p>}
      <ol class="activity-list">
        {entries.map((e) => {
          const member = e.action >= ActivityAction.MEMBER_ADDED;
          const target = member ? name(e.memberUserId) : (replica.get(e.workItemId)?.title ?? e.changes.find((c) => c.fieldName === "title")?.newValue ?? "an item");
          return (
            <li key={String(e.id)} class="activity-entry">
              <span class={`avatar sm hue-${hue(e.actorId)}`} aria-hidden="true">
                {initials(name(e.actorId))}
              </span>
              <div>
                <p>
                  <strong>{name(e.actorId)}</strong> {actionLabel[e.action] ?? "changed"} <em>{target}</em>
                  <time class="muted" dateTime={new Date(Number(e.createdAt)).toISOString()}>
                    {" "}
                    · {ago(Number(e.createdAt))}
                  </time>
                </p>
                {e.action === ActivityAction.UPDATED && e.changes.length > 0 && (
                  <ul class="changes">
                    {e.changes
                      .filter((c) => c.fieldName !== "position")
                      .map((c) => (
                        <li key={c.fieldName}>
                          {fieldLabel[c.fieldName] ?? c.fieldName}: <del>{value(c, c.oldValue)}</del> → <ins>{value(c, c.newValue)}</ins>
                        </li>
                      ))}
                  </ul>
                )}
              </div>
            </li>
          );
        })}
      </ol>
      {next && (
        <button type="button" class="button" onClick={() => load(next)} disabled={busy} data-testid="activity-more">
          {busy ? "Loading…" : "Load more"}
        </button>
      )}
    </div>
  );
}
