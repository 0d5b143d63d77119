import { useState } from "preact/hooks";
import {
  ConflictError,
  PmError,
  STATUSES,
  describeError,
  isCode,
  type ItemPatch,
  type ProjectStateManager,
  type WorkItemState,
} from "../client";
import { WorkItemPriority, WorkItemStatus, WorkItemType, type WorkItem } from "../gen/pm/v1/messages_pb";
import { ActivityList } from "./activity";
import { Dialog } from "./dialog";
import { useReplica } from "./hooks";
import { ITEM_TYPES, PRIORITIES, priorityInfo, statusInfo, typeInfo } from "./labels";
import type { Editing } from "./project";
import { useToast } from "./toasts";

type Field = "itemType" | "parentId" | "title" | "description" | "status" | "priority" | "assigneeId" | "storyPoints";

/** The server's Error.field names, mapped to the form's fields. */
const serverField: Record<string, Field> = {
  item_type: "itemType",
  parent_id: "parentId",
  title: "title",
  description: "description",
  status: "status",
  priority: "priority",
  assignee_id: "assigneeId",
  story_points: "storyPoints",
};

interface Props {
  manager: ProjectStateManager;
  replica: WorkItemState;
  editing: Editing;
  /** The item to edit; absent to create one. */
  itemId?: string;
  onClose: () => void;
}

function valuesOf(w: WorkItem | undefined, projectId: string): Record<Field, string> {
  return {
    itemType: String(w?.itemType ?? WorkItemType.TASK),
    parentId: w?.parentId || projectId,
    title: w?.title ?? "",
    description: w?.description ?? "",
    status: String(w?.status ?? WorkItemStatus.TODO),
    priority: String(w?.priority ?? WorkItemPriority.MEDIUM),
    assigneeId: w?.assigneeId ?? "",
    storyPoints: w?.storyPoints === undefined ? "" : String(w.storyPoints),
  };
}

/**
 * ItemDialog creates a work item, or shows and edits one. Fields the person
 * has not touched follow the item live; the server's field errors show
 * beside their field; delete shows why it was refused.
 */
export function ItemDialog({ manager, replica, editing, itemId, onClose }: Props) {
  const toast = useToast();
  useReplica(replica);
  const item = itemId ? replica.get(itemId) : undefined;
  const gone = itemId !== undefined && !item;
  const readOnly = !editing.canEdit;
  const [touched, setTouched] = useState<Partial<Record<Field, string>>>({});
  const [errors, setErrors] = useState<Partial<Record<Field, string>>>({});
  const [formError, setFormError] = useState("");
  const [busy, setBusy] = useState(false);
  const [confirmDelete, setConfirmDelete] = useState(false);
  const [deleteError, setDeleteError] = useState("");

  // The item as it was when the person started changing it: the base of the edit.
  const [base, setBase] = useState<WorkItem | undefined>();
  const live = valuesOf(item, replica.projectId);
  const v = { ...live, ...touched };
  const set = (f: Field) => (e: Event) => {
    const value = (e.currentTarget as HTMLInputElement).value;
    setBase((b) => b ?? (item ? replica.serverItem(item.id) : undefined));
    setTouched((t) => ({ ...t, [f]: value }));
    setErrors((x) => ({ ...x, [f]: undefined }));
  };

  const type = Number(v.itemType) as WorkItemType;
  const rank = typeInfo[type]?.rank ?? 1;
  const parents = replica
    .all()
    .filter((w) => (typeInfo[w.itemType]?.rank ?? 0) > rank && w.id !== itemId)
    .sort((a, b) => (typeInfo[b.itemType]?.rank ?? 0) - (typeInfo[a.itemType]?.rank ?? 0));
  const members = manager.members(replica.projectId) ?? [];

  const fail = (err: unknown) => {
    setBusy(false);
    if (err instanceof ConflictError) {
      onClose(); // the conflict dialog takes over
      return;
    }
    const f = err instanceof PmError ? serverField[err.field] : undefined;
    if (f) setErrors((x) => ({ ...x, [f]: err instanceof PmError ? err.message : String(err) }));
    else setFormError(describeError(err));
  };

  const points = v.storyPoints.trim();
  const submit = (e: Event) => {
    e.preventDefault();
    if (readOnly || gone) return;
    setFormError("");
    if (points !== "" && !/^\d+$/.test(points)) {
      setErrors((x) => ({ ...x, storyPoints: "Story points are a whole number from 0 to 1000." }));
      return;
    }
    setBusy(true);
    if (!item) {
      manager
        .createItem({
          projectId: replica.projectId,
          itemType: type,
          parentId: v.parentId === replica.projectId ? "" : v.parentId,
          title: v.title,
          description: v.description,
          status: Number(v.status),
          priority: Number(v.priority),
          assigneeId: v.assigneeId,
          storyPoints: points === "" ? undefined : Number(points),
        })
        .then((w) => {
          toast("info", `Created “${w.title}”.`);
          onClose();
        }, fail);
      return;
    }
    const patch: ItemPatch = {};
    if ("title" in touched && v.title !== item.title) patch.title = v.title;
    if ("description" in touched && v.description !== item.description) patch.description = v.description;
    if ("status" in touched && v.status !== live.status) patch.status = Number(v.status);
    if ("priority" in touched && v.priority !== live.priority) patch.priority = Number(v.priority);
    if ("assigneeId" in touched && v.assigneeId !== item.assigneeId) patch.assigneeId = v.assigneeId;
    if ("parentId" in touched && v.parentId !== item.parentId) patch.parentId = v.parentId;
    if ("storyPoints" in touched && live.storyPoints !== points) patch.storyPoints = points === "" ? null : Number(points);
    if (Object.keys(patch).length === 0) {
      onClose();
      return;
    }
    // Somebody else changed a field this edit changes since the person began: send the
    // version the person began from, so that the server answers CONFLICT and the person
    // chooses. Changes of other fields meanwhile are kept: only changed fields are sent.
    const was = base && valuesOf(base, replica.projectId);
    const clash = was && (Object.keys(touched) as Field[]).some((f) => was[f] !== live[f]);
    // The edit shows on the board at once; the dialog waits for the answer to show errors.
    manager.updateItem(replica.projectId, item.id, patch, clash ? { expectedVersion: base.version } : {}).then(onClose, fail);
  };

  const remove = () => {
    if (!item) return;
    setBusy(true);
    manager.deleteItem(replica.projectId, item.id).then(
      () => {
        toast("info", `Deleted “${item.title}”.`);
        onClose();
      },
      (err: unknown) => {
        setBusy(false);
        setConfirmDelete(false);
        setDeleteError(isCode(err, "DELETE_BLOCKED") ? `Cannot delete: ${err.message}.` : describeError(err));
      },
    );
  };

  const title = !itemId ? "New item" : readOnly ? `${typeInfo[item?.itemType ?? 0]?.label ?? "Item"} details` : `Edit ${typeInfo[item?.itemType ?? 0]?.label.toLowerCase() ?? "item"}`;
  const fieldProps = (f: Field) => ({
    id: `f-${f}`,
    name: f,
    disabled: readOnly || busy || gone,
    "aria-invalid": errors[f] ? ("true" as const) : undefined,
    "aria-describedby": errors[f] ? `f-${f}-error` : undefined,
  });
  const err = (f: Field) =>
    errors[f] && (
      <p id={`f-${f}-error`} class="field-error" data-testid={`error-${f}`}>
        {errors[f]}
      </p>
    );

  return (
    <Dialog title={title} testid="item-dialog" onClose={onClose} wide>
      <form class="item-form" onSubmit={submit} noValidate>
        {gone && (
          <p class="notice notice-error" role="alert">
            Somebody deleted this item.
          </p>
        )}
        {item && replica.isPending(item.id) && <p class="notice">Saving your change…</p>}
        {formError && (
          <p class="notice notice-error" role="alert" data-testid="form-error">
            {formError}
          </p>
        )}
        <div class="grid-2">
          <div class="field">
            <label for="f-itemType">Type</label>
            <select {...fieldProps("itemType")} disabled={readOnly || busy || !!itemId} value={v.itemType} onChange={set("itemType")}>
              {ITEM_TYPES.map((t) => (
                <option key={t} value={String(t)}>
                  {typeInfo[t]!.label}
                </option>
              ))}
            </select>
            {err("itemType")}
          </div>
          <div class="field">
            <label for="f-parentId">Parent</label>
            <select {...fieldProps("parentId")} value={v.parentId} onChange={set("parentId")}>
              {parents.map((p) => (
                <option key={p.id} value={p.id}>
                  {p.itemType === WorkItemType.PROJECT ? `${p.title} (project)` : `${typeInfo[p.itemType]?.label}: ${p.title}`}
                </option>
              ))}
            </select>
            {err("parentId")}
          </div>
        </div>
        <div class="field">
          <label for="f-title">Title</label>
          <input {...fieldProps("title")} type="text" required maxLength={500} value={v.title} onInput={set("title")} autofocus={!readOnly} />
          {err("title")}
        </div>
        <div class="field">
          <label for="f-description">Description</label>
          <textarea {...fieldProps("description")} rows={4} value={v.description} onInput={set("description")} />
          {err("description")}
        </div>
        <div class="grid-4">
          <div class="field">
            <label for="f-status">Status</label>
            <select {...fieldProps("status")} value={v.status} onChange={set("status")}>
              {STATUSES.map((s) => (
                <option key={s} value={String(s)}>
                  {statusInfo[s]!.label}
                </option>
              ))}
            </select>
            {err("status")}
          </div>
          <div class="field">
            <label for="f-priority">Priority</label>
            <select {...fieldProps("priority")} value={v.priority} onChange={set("priority")}>
              {PRIORITIES.map((p) => (
                <option key={p} value={String(p)}>
                  {priorityInfo[p]!.label}
                </option>
              ))}
            </select>
            {err("priority")}
          </div>
          <div class="field">
            <label for="f-assigneeId">Assignee</label>
            <select {...fieldProps("assigneeId")} value={v.assigneeId} onChange={set("assigneeId")}>
              <option value="">Unassigned</option>
              {members.map((m) => (
                <option key={m.userId} value={m.userId}>
                  {m.displayName || m.email || m.userId}
                </option>
              ))}
              {v.assigneeId && !members.some((m) => m.userId === v.assigneeId) && (
                <option value={v.assigneeId}>{manager.displayName(replica.projectId, v.assigneeId)}</option>
              )}
            </select>
            {err("assigneeId")}
          </div>
          <div class="field">
            <label for="f-storyPoints">Story points</label>
            <input {...fieldProps("storyPoints")} type="number" min={0} max={1000} step={1} inputMode="numeric" value={v.storyPoints} onInput={set("storyPoints")} />
            {err("storyPoints")}
          </div>
        </div>
        {deleteError && (
          <p class="notice notice-error" role="alert" data-testid="delete-error">
            {deleteError}
          </p>
        )}
        {!readOnly && (
          <div class="actions">
            {item &&
              (confirmDelete ? (
                <span class="confirm" role="group" aria-label="Confirm delete">
                  <span>Delete this item?</span>
                  <button type="button" class="button danger" onClick={remove} disabled={busy} data-testid="confirm-delete">
                    Delete
                  </button>
                  <button type="button" class="button" onClick={() => setConfirmDelete(false)}>
                    Keep
                  </button>
                </span>
              ) : (
                <button type="button" class="button danger-subtle" onClick={() => setConfirmDelete(true)} disabled={busy || gone} data-testid="delete-item">
                  Delete
                </button>
              ))}
            <span class="spacer" />
            <button type="button" class="button" onClick={onClose}>
              Cancel
            </button>
            <button type="submit" class="button primary" disabled={busy || gone} data-testid="save-item">
              {item ? "Save" : "Create"}
            </button>
          </div>
        )}
      </form>
      {item && (
        <details class="history">
          <summary>History</summary>
          <ActivityList manager={manager} replica={replica} workItemId={item.id} />
        </details>
      )}
    </Dialog>
  );
}
