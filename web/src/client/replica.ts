import {
  WorkItemStatus,
  WorkItemType,
  type WebSocketMessage,
  type WorkItem,
  type WorkItemsList,
} from "../gen/pm/v1/messages_pb";

/** ItemEvent is one work item change: from an event, or the answer to one of our own writes. */
export interface ItemEvent {
  projectId: string;
  revision: bigint;
  id: string;
  /** The item's new state; undefined for a delete that carries no tombstone. */
  item: WorkItem | undefined;
  deleted: boolean;
}

/**
 * eventOf extracts the work item change from a WorkItemCreated,
 * WorkItemUpdated or WorkItemDeleted message; undefined for other messages.
 */
export function eventOf(m: WebSocketMessage): ItemEvent | undefined {
  const p = m.payload;
  switch (p.case) {
    case "workItemCreated":
    case "workItemUpdated": {
      const w = p.value.workItem;
      if (!w) return undefined;
      return { projectId: w.projectId, revision: w.revision, id: w.id, item: w, deleted: w.deletedAt !== 0n };
    }
    case "workItemDeleted": {
      const d = p.value;
      const w = d.workItem;
      const ev: ItemEvent = {
        projectId: d.projectId || w?.projectId || "",
        revision: d.revision || w?.revision || 0n,
        id: d.workItemId || w?.id || "",
        item: w,
        deleted: true,
      };
      return ev.projectId && ev.id && ev.revision > 0n ? ev : undefined;
    }
    default:
      return undefined;
  }
}

/** Outcome says what applying an event did. */
export type Outcome =
  | "applied" // revision was last+1: applied, with any buffered events that follow on
  | "stale" // revision <= last: already in the replica, ignored
  | "gap" // revision > last+1: buffered; the replica needs a resync
  | "buffered"; // before the first load: kept until the load says what it covers

/** Change tells listeners what changed: these ids (all when null); remote when another person's doing. */
export interface Change {
  ids: readonly string[] | null;
  remote: boolean;
}

/** Overlay maps the server's state of an item to the state an own unanswered change will give it. */
export type Overlay = (server: WorkItem | undefined) => WorkItem | null;

export type ReplicaStatus = "loading" | "ready" | "closed";

/** The board's columns, in order. */
export const STATUSES = [
  WorkItemStatus.BACKLOG,
  WorkItemStatus.TODO,
  WorkItemStatus.IN_PROGRESS,
  WorkItemStatus.REVIEW,
  WorkItemStatus.DONE,
] as const;

/** byPosition orders items by position, byte-wise, then by id (the server's order). */
export function byPosition(a: WorkItem, b: WorkItem): number {
  if (a.position !== b.position) return a.position < b.position ? -1 : 1;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/**
 * WorkItemState is the replica of one project: its live work items (the
 * project item included) as of a revision, kept exact by the sync contract
 * of docs/protocol.md. Events apply in revision order (last+1); older ones
 * and duplicates are ignored; later ones wait in a buffer and mark a gap
 * that a resync fills. On top of the server's state it holds an overlay of
 * the person's own changes not yet answered, so the board shows them at
 * once. ProjectStateManager drives it; the UI reads it and listens.
 */
export class WorkItemState {
  private statusValue: ReplicaStatus = "loading";
  private closedReasonValue = "";
  private rev = 0n;
  private loaded = false;
  /** Live items as the server has them, by id. */
  private readonly items = new Map<string, WorkItem>();
  /** Events past a gap (or before the first load), by revision. */
  private readonly ahead = new Map<bigint, ItemEvent>();
  /** Own changes awaiting their answer: how they change the server's item. */
  private readonly overlay = new Map<string, Overlay>();
  /** Overlays answered at a revision the replica has not reached yet (past a gap), by id. */
  private readonly settling = new Map<string, bigint>();
  private sorted: WorkItem[] | undefined;
  private columns: Map<WorkItemStatus, WorkItem[]> | undefined;
  private readonly listeners = new Set<(c: Change) => void>();
  private versionValue = 0;

  constructor(readonly projectId: string) {}

  /** loading until the first load, ready, or closed (see closedReason). */
  get status(): ReplicaStatus {
    return this.statusValue;
  }
  /** Why the replica was closed (e.g. the user was removed from the project). */
  get closedReason(): string {
    return this.closedReasonValue;
  }
  /** The last project revision applied; 0 until the first load. */
  get revision(): bigint {
    return this.rev;
  }
  /** Counts the changes: a cheap key for memoised views. */
  get version(): number {
    return this.versionValue;
  }
  /** Whether events wait past a missing revision (a resync will fill it). */
  get hasGap(): boolean {
    return this.loaded && this.ahead.size > 0;
  }
  get isLoaded(): boolean {
    return this.loaded;
  }

  /** subscribe calls fn after every change; it returns the unsubscribe function. */
  subscribe(fn: (c: Change) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** The project's own work item. */
  get project(): WorkItem | undefined {
    return this.get(this.projectId);
  }

  /** The item as the board shows it (own unanswered changes included), or undefined. */
  get(id: string): WorkItem | undefined {
    const o = this.overlay.get(id);
    return o ? (o(this.items.get(id)) ?? undefined) : this.items.get(id);
  }

  /** The item as the server last said, without own unanswered changes. */
  serverItem(id: string): WorkItem | undefined {
    return this.items.get(id);
  }

  /** Whether an own change of the item awaits its answer. */
  isPending(id: string): boolean {
    return this.overlay.has(id);
  }

  /** Every item as shown, the project included, by position then id. Cached until the next change. */
  all(): readonly WorkItem[] {
    if (!this.sorted) {
      const out: WorkItem[] = [];
      for (const [id, w] of this.items) if (!this.overlay.has(id)) out.push(w);
      for (const [id, o] of this.overlay) {
        const w = o(this.items.get(id));
        if (w) out.push(w);
      }
      this.sorted = out.sort(byPosition);
    }
    return this.sorted;
  }

  /** The items of a board column (not the project), by position then id. */
  column(status: WorkItemStatus): readonly WorkItem[] {
    if (!this.columns) {
      const cols = new Map<WorkItemStatus, WorkItem[]>(STATUSES.map((s) => [s, []]));
      for (const w of this.all()) {
        if (w.itemType === WorkItemType.PROJECT) continue;
        cols.get(w.status)?.push(w);
      }
      this.columns = cols;
    }
    return this.columns.get(status) ?? [];
  }

  /**
   * applyEvent applies an event by the sync rule: revision last+1 is applied
   * (then any buffered events that follow on), revision <= last is ignored,
   * a later one is buffered and reported as a gap. remote says whether it is
   * somebody else's change (the UI highlights those).
   */
  applyEvent(ev: ItemEvent, remote: boolean): Outcome {
    if (this.statusValue === "closed") return "stale";
    if (!this.loaded) {
      this.ahead.set(ev.revision, ev);
      return "buffered";
    }
    if (ev.revision <= this.rev) return "stale";
    if (ev.revision > this.rev + 1n) {
      this.ahead.set(ev.revision, ev);
      return "gap";
    }
    const ids = [ev.id];
    this.put(ev);
    this.rev = ev.revision;
    this.drain(ids);
    this.changed(ids, remote);
    return "applied";
  }

  /**
   * applyList applies the answer to GetWorkItemsRequest{since_revision:
   * since}: with since 0 the whole project, replacing the replica; else every
   * item changed after since, tombstones included, merged newest-wins (so an
   * answer that crossed events is still right). It returns false, changing
   * nothing, when the answer cannot be applied (since beyond the replica).
   */
  applyList(since: bigint, list: WorkItemsList): boolean {
    if (this.statusValue === "closed") return false;
    if (since > 0n && (!this.loaded || since > this.rev)) return false;
    const ids: string[] = [];
    if (since === 0n && !this.loaded) {
      this.items.clear();
      for (const w of list.workItems) if (w.deletedAt === 0n) this.items.set(w.id, w);
      this.rev = list.asOfRevision;
    } else {
      for (const w of list.workItems) {
        if (this.put({ projectId: w.projectId, revision: w.revision, id: w.id, item: w, deleted: w.deletedAt !== 0n })) {
          ids.push(w.id);
        }
      }
      if (list.asOfRevision > this.rev) this.rev = list.asOfRevision;
    }
    const first = !this.loaded;
    this.loaded = true;
    this.statusValue = "ready";
    this.drain(ids);
    this.changed(first ? null : ids, true);
    return true;
  }

  /**
   * setOverlay shows an own change before its answer: view maps the
   * server's item (undefined for a new one) to the item as it will be, or to
   * null when it will be gone. Changes of the server's item meanwhile show
   * through it.
   */
  setOverlay(id: string, view: Overlay): void {
    this.overlay.set(id, view);
    this.changed([id], false);
  }

  /** clearOverlay drops an own change once refused (or answered). */
  clearOverlay(id: string): void {
    this.settling.delete(id);
    if (this.overlay.delete(id)) this.changed([id], false);
  }

  /**
   * settleOverlay drops an own change once the replica has reached the
   * revision that answered it. Until then (the answer came past a gap that a
   * resync is filling) the change stays shown, so the card does not jump
   * back to where it was for a moment.
   */
  settleOverlay(id: string, revision: bigint): void {
    if (this.rev >= revision || this.statusValue === "closed") this.clearOverlay(id);
    else this.settling.set(id, revision);
  }

  /** close ends the replica: no more changes apply; reason is shown to the person. */
  close(reason: string): void {
    if (this.statusValue === "closed") return;
    this.statusValue = "closed";
    this.closedReasonValue = reason;
    this.ahead.clear();
    this.changed(null, true);
  }

  /** put stores an item's new state unless the replica has a newer one; reports a change. */
  private put(ev: ItemEvent): boolean {
    const cur = this.items.get(ev.id);
    if (cur && ev.item && cur.revision > ev.item.revision) return false;
    if (ev.deleted) return this.items.delete(ev.id);
    if (!ev.item) return false;
    this.items.set(ev.id, ev.item);
    return true;
  }

  /** drain applies buffered events that now follow on and drops those already covered. */
  private drain(ids: string[]): void {
    for (;;) {
      const ev = this.ahead.get(this.rev + 1n);
      if (!ev) break;
      this.ahead.delete(ev.revision);
      this.put(ev);
      ids.push(ev.id);
      this.rev = ev.revision;
    }
    for (const r of this.ahead.keys()) if (r <= this.rev) this.ahead.delete(r);
  }

  private changed(ids: readonly string[] | null, remote: boolean): void {
    for (const [id, rev] of this.settling) {
      if (rev <= this.rev) {
        this.settling.delete(id);
        this.overlay.delete(id);
      }
    }
    this.sorted = undefined;
    this.columns = undefined;
    this.versionValue++;
    for (const fn of this.listeners) fn({ ids, remote });
  }
}
