import { useLayoutEffect, useState } from "preact/hooks";
import { ConflictError, describeError, type Conflict, type ItemPatch, type ProjectStateManager } from "../client";
import type { WorkItem } from "../gen/pm/v1/messages_pb";
import { Dialog } from "./dialog";
import { priorityInfo, statusInfo } from "./labels";
import { useToast } from "./toasts";

const fieldNames: Record<keyof ItemPatch, string> = {
  title: "Title",
  description: "Description",
  status: "Status",
  priority: "Priority",
  assigneeId: "Assignee",
  parentId: "Parent",
  position: "Position",
  storyPoints: "Story points",
};

/**
 * ConflictDialog shows the oldest conflict: the person's change beside the
 * other person's version, and asks: keep mine (apply it again on their
 * version) or take theirs. Nothing is dropped without that choice.
 */
export function ConflictDialog({ manager }: { manager: ProjectStateManager }) {
  const toast = useToast();
  const [conflicts, setConflicts] = useState(manager.conflicts);
  const [, setNames] = useState(0);
  useLayoutEffect(() => {
    setConflicts(manager.conflicts);
    return manager.onConflicts(setConflicts);
  }, [manager]);
  // The other person's name may arrive after the conflict (a members reload).
  useLayoutEffect(() => manager.onMembers(() => setNames((n) => n + 1)), [manager]);
  const c = conflicts[0];
  if (!c) return null;
  const resolve = (choice: "mine" | "theirs") => {
    manager.resolveConflict(c.key, choice).catch((err: unknown) => {
      if (!(err instanceof ConflictError)) toast("error", `Your change was not saved: ${describeError(err)}`);
    });
  };
  const show = (f: keyof ItemPatch, w: WorkItem | undefined, patch?: ItemPatch) => text(manager, c, f, patch ? patch[f] : w?.[f]);
  // A position alone means nothing to a person: a move shows as its column, or as "moved".
  const fields = (Object.keys(c.mine) as (keyof ItemPatch)[]).filter(
    (f) => c.mine[f] !== undefined && (f !== "position" || c.mine.status === undefined),
  );
  const name = c.theirs?.updatedBy ? manager.displayName(c.projectId, c.theirs.updatedBy) : "Somebody";
  return (
    <Dialog title="Somebody changed this item first" testid="conflict-dialog" alert onClose={() => undefined}>
      <p>
        {c.theirs ? (
          <>
            <strong>{name}</strong> saved a change to “{c.theirs.title}” before yours arrived. Choose which version to keep.
          </>
        ) : (
          <>“{c.base?.title}” was deleted before your change arrived.</>
        )}
      </p>
      <table class="conflict-table">
        <thead>
          <tr>
            <th scope="col">Field</th>
            <th scope="col">Yours</th>
            <th scope="col">Theirs (now)</th>
          </tr>
        </thead>
        <tbody>
          {fields.map((f) => (
            <tr key={f}>
              <th scope="row">{fieldNames[f]}</th>
              <td data-testid={`conflict-mine-${f}`}>{show(f, undefined, c.mine)}</td>
              <td data-testid={`conflict-theirs-${f}`}>{c.theirs ? show(f, c.theirs) : "deleted"}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {conflicts.length > 1 && <p class="muted">{conflicts.length - 1} more after this one.</p>}
      <div class="actions">
        <button type="button" class="button" onClick={() => resolve("theirs")} data-testid="conflict-take-theirs">
          {c.theirs ? "Take theirs" : "Discard mine"}
        </button>
        {c.theirs && (
          <button type="button" class="button primary" onClick={() => resolve("mine")} data-testid="conflict-keep-mine" autofocus>
            Keep mine
          </button>
        )}
      </div>
    </Dialog>
  );
}

function text(manager: ProjectStateManager, c: Conflict, f: keyof ItemPatch, v: string | number | null | undefined): string {
  if (v === undefined || v === null || v === "") return "—";
  switch (f) {
    case "status":
      return statusInfo[Number(v)]?.label ?? String(v);
    case "priority":
      return priorityInfo[Number(v)]?.label ?? String(v);
    case "assigneeId":
      return manager.displayName(c.projectId, String(v));
    case "parentId":
      return manager.replica(c.projectId)?.get(String(v))?.title ?? String(v);
    case "position":
      return v === c.mine.position ? "moved here" : "where they left it";
    default:
      return String(v);
  }
}
