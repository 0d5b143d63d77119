import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import {
  ConflictError,
  STATUSES,
  describeError,
  positionAt,
  type ProjectStateManager,
  type WorkItemState,
} from "../client";
import type { WorkItem, WorkItemStatus } from "../gen/pm/v1/messages_pb";
import { useHighlights, useReplica } from "./hooks";
import { hue, initials, priorityInfo, statusInfo, typeInfo } from "./labels";
import { memo } from "./memo";
import type { Editing } from "./project";
import { useToast } from "./toasts";

/** Target is where a card being moved would land: in a column, before a card (null: at the end). */
interface Target {
  status: WorkItemStatus;
  beforeId: string | null;
}

interface Props {
  manager: ProjectStateManager;
  replica: WorkItemState;
  editing: Editing;
  onOpen: (w: WorkItem) => void;
}

/**
 * Board shows a project as columns by status, ordered by position. Editors
 * move cards by dragging them, or from the keyboard: M (or Space) picks the
 * focused card up, the arrows move it, Enter drops it, Escape puts it back.
 */
export function Board({ manager, replica, editing, onOpen }: Props) {
  const toast = useToast();
  useReplica(replica);
  const highlights = useHighlights(replica);
  const [dragId, setDragId] = useState<string | null>(null);
  const [movingId, setMovingId] = useState<string | null>(null);
  const [target, setTarget] = useState<Target | null>(null);
  const [announce, setAnnounce] = useState("");
  const refocus = useRef<string | null>(null);

  // The newest state for the handlers, which stay the same functions so the cards need not re-render.
  const latest = useRef({ target, movingId, dragId, editing, onOpen, toast });
  latest.current = { target, movingId, dragId, editing, onOpen, toast };

  const h = useMemo(() => {
    const othersOf = (status: WorkItemStatus, id: string) => replica.column(status).filter((w) => w.id !== id);
    const nextAfter = (status: WorkItemStatus, id: string): string | null => {
      const col = replica.column(status);
      const i = col.findIndex((w) => w.id === id);
      return col.slice(i + 1).find((w) => w.id !== id)?.id ?? null;
    };
    // The setters update latest at once: key events can come faster than renders.
    const setT = (t: Target | null) => {
      const cur = latest.current.target;
      if (cur?.status === t?.status && cur?.beforeId === t?.beforeId) return;
      latest.current.target = t;
      setTarget(t);
    };
    const setMoving = (id: string | null) => {
      latest.current.movingId = id;
      setMovingId(id);
    };
    const setDrag = (id: string | null) => {
      latest.current.dragId = id;
      setDragId(id);
    };
    const describe = (id: string, t: Target) => {
      const others = othersOf(t.status, id);
      const i = t.beforeId ? others.findIndex((w) => w.id === t.beforeId) : others.length;
      return `${statusInfo[t.status]?.label}, position ${i + 1} of ${others.length + 1}`;
    };
    const drop = (id: string, t: Target) => {
      const w = replica.get(id);
      if (!w) return;
      const col = replica.column(t.status);
      const others = col.filter((x) => x.id !== id);
      const index = t.beforeId ? Math.max(0, others.findIndex((x) => x.id === t.beforeId)) : others.length;
      if (w.status === t.status && nextAfter(w.status, id) === t.beforeId) return; // same place
      let position: string;
      try {
        position = positionAt(col, id, index);
      } catch (err) {
        latest.current.toast("error", describeError(err));
        return;
      }
      refocus.current = id;
      manager
        .updateItem(replica.projectId, id, w.status === t.status ? { position } : { status: t.status, position })
        .catch((err: unknown) => {
          if (!(err instanceof ConflictError)) latest.current.toast("error", `Could not move “${w.title}”: ${describeError(err)}`);
        });
    };
    return {
      open: (id: string) => {
        const w = replica.get(id);
        if (w) latest.current.onOpen(w);
      },
      dragStart: (e: DragEvent, id: string) => {
        if (!latest.current.editing.canEdit || !e.dataTransfer) return;
        e.dataTransfer.effectAllowed = "move";
        e.dataTransfer.setData("text/plain", id);
        setDrag(id);
      },
      dragEnd: () => {
        setDrag(null);
        setT(null);
      },
      dragOverCard: (e: DragEvent, over: WorkItem) => {
        const id = latest.current.dragId;
        if (!id) return;
        e.preventDefault();
        e.stopPropagation();
        if (over.id === id) return;
        const el = e.currentTarget as HTMLElement;
        const r = el.getBoundingClientRect();
        const below = e.clientY > r.top + r.height / 2;
        setT({ status: over.status, beforeId: below ? nextAfter(over.status, over.id) : over.id });
      },
      dragOverColumn: (e: DragEvent, status: WorkItemStatus) => {
        if (!latest.current.dragId) return;
        e.preventDefault();
        const t = latest.current.target;
        if (t?.status !== status) setT({ status, beforeId: null });
      },
      dropOn: (e: DragEvent) => {
        const { dragId: id, target: t } = latest.current;
        e.preventDefault();
        setDrag(null);
        setT(null);
        if (id && t) drop(id, t);
      },
      key: (e: KeyboardEvent, w: WorkItem) => {
        const { movingId: moving, target: t, editing: ed } = latest.current;
        if (moving !== w.id) {
          if (e.key === "Enter") {
            e.preventDefault();
            latest.current.onOpen(w);
          } else if (ed.canEdit && (e.key === "m" || e.key === "M" || e.key === " ")) {
            e.preventDefault();
            const start = { status: w.status, beforeId: nextAfter(w.status, w.id) };
            setMoving(w.id);
            setT(start);
            setAnnounce(`Picked up ${w.title}. ${describe(w.id, start)}. Arrow keys move it, Enter drops it, Escape cancels.`);
          }
          return;
        }
        if (!t) return;
        const others = othersOf(t.status, w.id);
        let i = t.beforeId ? others.findIndex((x) => x.id === t.beforeId) : others.length;
        let next: Target | null = null;
        switch (e.key) {
          case "ArrowUp":
            i = Math.max(0, i - 1);
            next = { status: t.status, beforeId: others[i]?.id ?? null };
            break;
          case "ArrowDown":
            i = Math.min(others.length, i + 1);
            next = { status: t.status, beforeId: others[i]?.id ?? null };
            break;
          case "ArrowLeft":
          case "ArrowRight": {
            const s = STATUSES.indexOf(t.status as (typeof STATUSES)[number]) + (e.key === "ArrowLeft" ? -1 : 1);
            const status = STATUSES[Math.max(0, Math.min(STATUSES.length - 1, s))]!;
            const o = othersOf(status, w.id);
            next = { status, beforeId: o[Math.min(i, o.length)]?.id ?? null };
            break;
          }
          case "Enter":
          case " ":
          case "m":
          case "M":
            e.preventDefault();
            setMoving(null);
            setT(null);
            setAnnounce(`Dropped ${w.title}: ${describe(w.id, t)}.`);
            drop(w.id, t);
            return;
          case "Escape":
          case "Tab":
            if (e.key === "Escape") e.preventDefault();
            setMoving(null);
            setT(null);
            setAnnounce(`Move of ${w.title} cancelled.`);
            return;
          default:
            return;
        }
        e.preventDefault();
        setT(next);
        setAnnounce(describe(w.id, next));
      },
    };
  }, [replica, manager]);

  // After a keyboard drop the card is a new element in its new column: keep the focus on it.
  useEffect(() => {
    const id = refocus.current;
    if (!id) return;
    const el = document.querySelector<HTMLElement>(`[data-testid="card"][data-id="${CSS.escape(id)}"]`);
    if (el && document.activeElement !== el && document.activeElement?.closest?.('[data-testid="card"]') == null) {
      refocus.current = null;
      el.focus();
    }
  });

  const moving = movingId ?? dragId;
  const canEdit = editing.canEdit;
  return (
    <div class="board-wrap">
      <p id="card-help" class="sr-only">
        {canEdit ? "Enter opens the item. M picks the card up to move it with the arrow keys." : "Enter opens the item."}
      </p>
      <p class="sr-only" role="status" aria-live="assertive" data-testid="board-announcer">
        {announce}
      </p>
      <div class={`board${moving ? " is-moving" : ""}`} data-testid="board" aria-label="Board" role="region">
        {STATUSES.map((s) => {
          const items = replica.column(s);
          const t = target?.status === s ? target : null;
          return (
            <Column
              key={s}
              status={s}
              items={items}
              dropBeforeId={t ? (t.beforeId ?? "") : null}
              onDragOver={h.dragOverColumn}
              onDrop={h.dropOn}
            >
              {items.map((w) => (
                <Card
                  key={w.id}
                  item={w}
                  flash={highlights.has(w.id)}
                  pending={replica.isPending(w.id)}
                  moving={moving === w.id}
                  dropBefore={t?.beforeId === w.id}
                  canEdit={canEdit}
                  assignee={w.assigneeId ? manager.displayName(replica.projectId, w.assigneeId) : ""}
                  h={h}
                />
              ))}
            </Column>
          );
        })}
      </div>
    </div>
  );
}

interface ColumnProps {
  status: WorkItemStatus;
  items: readonly WorkItem[];
  /** null: no drop here; "": drop at the end; else the id of the card the drop goes before. */
  dropBeforeId: string | null;
  onDragOver: (e: DragEvent, s: WorkItemStatus) => void;
  onDrop: (e: DragEvent) => void;
  children: preact.ComponentChildren;
}

function Column({ status, items, dropBeforeId, onDragOver, onDrop, children }: ColumnProps) {
  const info = statusInfo[status]!;
  const points = items.reduce((a, w) => a + (w.storyPoints ?? 0), 0);
  return (
    <section
      class={`column status-${info.slug}${dropBeforeId === "" ? " drop-end" : ""}${dropBeforeId !== null ? " drop-here" : ""}`}
      data-testid={`column-${info.slug}`}
      data-status={info.slug}
      aria-labelledby={`col-${info.slug}`}
      onDragOver={(e) => onDragOver(e, status)}
      onDrop={onDrop}
    >
      <header class="column-head">
        <span class={`dot status-bg-${info.slug}`} aria-hidden="true" />
        <h2 id={`col-${info.slug}`}>{info.label}</h2>
        <span class="column-count" aria-label={`${items.length} items`}>
          {items.length}
        </span>
        {points > 0 && (
          <span class="column-points" title="Story points in this column">
            {points} pts
          </span>
        )}
      </header>
      <ol class="cards" aria-label={`${info.label}: ${items.length} items`}>
        {children}
      </ol>
      {items.length === 0 && <p class="column-empty">Nothing here yet</p>}
    </section>
  );
}

type Handlers = {
  open: (id: string) => void;
  dragStart: (e: DragEvent, id: string) => void;
  dragEnd: () => void;
  dragOverCard: (e: DragEvent, w: WorkItem) => void;
  key: (e: KeyboardEvent, w: WorkItem) => void;
};

interface CardProps {
  item: WorkItem;
  flash: boolean;
  pending: boolean;
  moving: boolean;
  dropBefore: boolean;
  canEdit: boolean;
  assignee: string;
  h: Handlers;
}

/** Card is one work item on the board; it renders again only when its props change. */
export const Card = memo(function Card({ item: w, flash, pending, moving, dropBefore, canEdit, assignee, h }: CardProps) {
  const type = typeInfo[w.itemType] ?? { label: "Item", slug: "task" };
  const prio = priorityInfo[w.priority];
  const label = [
    `${type.label}: ${w.title}`,
    prio && `${prio.label} priority`,
    assignee ? `assigned to ${assignee}` : "unassigned",
    w.storyPoints !== undefined && `${w.storyPoints} points`,
    pending && "saving",
  ]
    .filter(Boolean)
    .join(", ");
  return (
    <li class={`card-slot${dropBefore ? " drop-before" : ""}`}>
      <article
        class={`card type-${type.slug}${flash ? " flash" : ""}${pending ? " pending" : ""}${moving ? " moving" : ""}`}
        tabIndex={0}
        data-testid="card"
        data-id={w.id}
        aria-label={label}
        aria-describedby="card-help"
        draggable={canEdit}
        onClick={() => h.open(w.id)}
        onKeyDown={(e) => h.key(e, w)}
        onDragStart={(e) => h.dragStart(e, w.id)}
        onDragEnd={h.dragEnd}
        onDragOver={(e) => h.dragOverCard(e, w)}
      >
        <div class="card-top">
          <span class={`type-badge type-${type.slug}`}>{type.label}</span>
          {prio && <span class={`prio prio-${prio.slug}`}>{prio.label}</span>}
        </div>
        <h3 class="card-title">{w.title}</h3>
        <div class="card-foot">
          {assignee ? (
            <span class="assignee">
              <span class={`avatar sm hue-${hue(w.assigneeId)}`} aria-hidden="true">
                {initials(assignee)}
              </span>
              <span class="assignee-name">{assignee}</span>
            </span>
          ) : (
            <span class="unassigned">Unassigned</span>
          )}
          {w.storyPoints !== undefined && (
            <span class="points" aria-hidden="true">
              {w.storyPoints}
            </span>
          )}
          {pending && <span class="saving" aria-hidden="true" title="Saving…" />}
        </div>
      </article>
    </li>
  );
});
