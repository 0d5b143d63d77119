import { useCallback, useMemo, useRef, useState } from "preact/hooks";
import { STATUSES, type ProjectStateManager, type WorkItemState } from "../client";
import { WorkItemType, type WorkItem } from "../gen/pm/v1/messages_pb";
import { useHighlights, useReplica } from "./hooks";
import { ITEM_TYPES, hue, initials, priorityInfo, statusInfo, typeInfo } from "./labels";
import { memo } from "./memo";

interface Filters {
  text: string;
  type: string;
  status: string;
  assignee: string;
}

interface Row {
  item: WorkItem;
  depth: number;
  /** Shown for its matching descendants only. */
  context: boolean;
  hasChildren: boolean;
}

/** ListView shows the project as a tree (epic › story › task) with filters. */
export function ListView({ manager, replica, onOpen }: { manager: ProjectStateManager; replica: WorkItemState; onOpen: (w: WorkItem) => void }) {
  const version = useReplica(replica);
  const highlights = useHighlights(replica);
  const [f, setF] = useState<Filters>({ text: "", type: "", status: "", assignee: "" });
  const [collapsed, setCollapsed] = useState<ReadonlySet<string>>(new Set());
  const members = manager.members(replica.projectId) ?? [];
  const filtering = f.text !== "" || f.type !== "" || f.status !== "" || f.assignee !== "";

  const rows = useMemo(() => {
    const children = new Map<string, WorkItem[]>();
    const all = replica.all();
    const ids = new Set(all.map((w) => w.id));
    for (const w of all) {
      if (w.itemType === WorkItemType.PROJECT) continue;
      const parent = ids.has(w.parentId) ? w.parentId : replica.projectId;
      const list = children.get(parent);
      if (list) list.push(w);
      else children.set(parent, [w]);
    }
    const text = f.text.trim().toLowerCase();
    const matches = (w: WorkItem) =>
      (!text || w.title.toLowerCase().includes(text) || w.description.toLowerCase().includes(text)) &&
      (!f.type || String(w.itemType) === f.type) &&
      (!f.status || String(w.status) === f.status) &&
      (!f.assignee || (f.assignee === "none" ? !w.assigneeId : w.assigneeId === f.assignee));
    const out: Row[] = [];
    const walk = (parent: string, depth: number): boolean => {
      let any = false;
      for (const w of children.get(parent) ?? []) {
        const at = out.length;
        const kids = children.get(w.id);
        out.push({ item: w, depth, context: false, hasChildren: !!kids });
        const self = matches(w);
        const open = filtering || !collapsed.has(w.id);
        const below = kids ? (open ? walk(w.id, depth + 1) : subtreeMatches(w.id)) : false;
        if (!self && !below) out.length = at;
        else if (!self) out[at]!.context = true;
        any ||= self || below;
      }
      return any;
    };
    const subtreeMatches = (id: string): boolean => (children.get(id) ?? []).some((w) => !filtering || matches(w) || subtreeMatches(w.id));
    walk(replica.projectId, 0);
    return out;
    // version: the replica changed
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [replica, version, f, collapsed, filtering]);

  const toggle = useCallback(
    (id: string) =>
      setCollapsed((c) => {
        const n = new Set(c);
        if (!n.delete(id)) n.add(id);
        return n;
      }),
    [],
  );
  const latestOpen = useRef(onOpen);
  latestOpen.current = onOpen;
  const openRef = useCallback((w: WorkItem) => latestOpen.current(w), []);
  const set = (k: keyof Filters) => (e: Event) => {
    const value = (e.currentTarget as HTMLInputElement).value;
    setF((cur) => ({ ...cur, [k]: value }));
  };

  return (
    <div class="list-view" data-testid="list-view">
      <form class="filters" role="search" aria-label="Filter items" onSubmit={(e) => e.preventDefault()}>
        <label class="sr-only" for="flt-text">
          Search
        </label>
        <input id="flt-text" type="search" placeholder="Search titles and descriptions" value={f.text} onInput={set("text")} data-testid="filter-text" />
        <label class="sr-only" for="flt-type">
          Type
        </label>
        <select id="flt-type" value={f.type} onChange={set("type")} data-testid="filter-type">
          <option value="">All types</option>
          {ITEM_TYPES.map((t) => (
            <option key={t} value={String(t)}>
              {typeInfo[t]!.label}
            </option>
          ))}
        </select>
        <label class="sr-only" for="flt-status">
          Status
        </label>
        <select id="flt-status" value={f.status} onChange={set("status")} data-testid="filter-status">
          <option value="">All statuses</option>
          {STATUSES.map((s) => (
            <option key={s} value={String(s)}>
              {statusInfo[s]!.label}
            </option>
          ))}
        </select>
        <label class="sr-only" for="flt-assignee">
          Assignee
        </label>
        <select id="flt-assignee" value={f.assignee} onChange={set("assignee")} data-testid="filter-assignee">
          <option value="">Anyone</option>
          <option value="none">Unassigned</option>
          {members.map((m) => (
            <option key={m.userId} value={m.userId}>
              {m.displayName || m.email || m.userId}
            </option>
          ))}
        </select>
        {filtering && (
          <button type="button" class="link-button" onClick={() => setF({ text: "", type: "", status: "", assignee: "" })}>
            Clear filters
          </button>
        )}
      </form>
      {rows.length === 0 ? (
        <div class="empty">
          <h2>{filtering ? "Nothing matches these filters" : "No items yet"}</h2>
          <p>{filtering ? "Try fewer filters." : "Create an epic, a story or a task to start."}</p>
        </div>
      ) : (
        <ul class="tree" role="tree" aria-label="Items">
          {rows.map(({ item: w, depth, context, hasChildren }) => (
            <TreeRow
              key={w.id}
              item={w}
              depth={depth}
              context={context}
              hasChildren={hasChildren}
              filtering={filtering}
              open={filtering || !collapsed.has(w.id)}
              flash={highlights.has(w.id)}
              pending={replica.isPending(w.id)}
              assignee={w.assigneeId ? manager.displayName(replica.projectId, w.assigneeId) : ""}
              onToggle={toggle}
              onOpen={openRef}
            />
          ))}
        </ul>
      )}
    </div>
  );
}

interface RowProps {
  item: WorkItem;
  depth: number;
  context: boolean;
  hasChildren: boolean;
  filtering: boolean;
  open: boolean;
  flash: boolean;
  pending: boolean;
  assignee: string;
  onToggle: (id: string) => void;
  onOpen: (w: WorkItem) => void;
}

/** TreeRow is one item of the tree; it renders again only when its props change. */
const TreeRow = memo(function TreeRow({ item: w, depth, context, hasChildren, filtering, open, flash, pending, assignee, onToggle, onOpen }: RowProps) {
  const type = typeInfo[w.itemType] ?? { label: "Item", slug: "task" };
  const status = statusInfo[w.status];
  const prio = priorityInfo[w.priority];
  return (
    <li
      role="treeitem"
      aria-level={depth + 1}
      aria-expanded={hasChildren ? open : undefined}
      class={`tree-row depth-${Math.min(depth, 3)}${context ? " context" : ""}${flash ? " flash" : ""}${pending ? " pending" : ""}`}
      data-testid="tree-row"
      data-id={w.id}
    >
      {hasChildren && !filtering ? (
        <button type="button" class="twisty" aria-label={open ? `Collapse ${w.title}` : `Expand ${w.title}`} onClick={() => onToggle(w.id)}>
          {open ? "▾" : "▸"}
        </button>
      ) : (
        <span class="twisty" aria-hidden="true" />
      )}
      <span class={`type-badge type-${type.slug}`}>{type.label}</span>
      <button type="button" class="row-title" onClick={() => onOpen(w)}>
        {w.title}
      </button>
      {status && <span class={`status-pill status-${status.slug}`}>{status.label}</span>}
      {prio && <span class={`prio prio-${prio.slug}`}>{prio.label}</span>}
      <span class="row-assignee">
        {assignee ? (
          <>
            <span class={`avatar sm hue-${hue(w.assigneeId)}`} aria-hidden="true">
              {initials(assignee)}
            </span>
            {assignee}
          </>
        ) : (
          <span class="unassigned">Unassigned</span>
        )}
      </span>
      <span class="points" aria-label={w.storyPoints === undefined ? "not estimated" : `${w.storyPoints} points`}>
        {w.storyPoints ?? "–"}
      </span>
    </li>
  );
});
