import { create } from "@bufbuild/protobuf";
import {
  WorkItemPriority,
  WorkItemSchema,
  WorkItemStatus,
  WorkItemType,
  type ActivityList,
  type ProjectMember,
  type ProjectRole,
  type ProjectSummary,
  type WebSocketMessage,
  type WorkItem,
} from "../gen/pm/v1/messages_pb";
import { backoffDelay, type Backoff } from "./backoff";
import { PmError, isCode, isRefusal } from "./errors";
import { generateKeyBetween } from "./position";
import { WorkItemState, eventOf } from "./replica";
import type { ProjectManagementWebSocketClient } from "./socket";

/** NewItem is what a create needs; the rest has the server's defaults. */
export interface NewItem {
  projectId: string;
  itemType: WorkItemType;
  title: string;
  /** Empty or absent: a child of the project. */
  parentId?: string;
  description?: string;
  status?: WorkItemStatus;
  priority?: WorkItemPriority;
  assigneeId?: string;
  storyPoints?: number;
  /** Absent: after the last item of its column. */
  position?: string;
}

/** ItemPatch is the fields an update changes; storyPoints null removes the estimate, assigneeId "" unassigns. */
export interface ItemPatch {
  title?: string;
  description?: string;
  status?: WorkItemStatus;
  priority?: WorkItemPriority;
  assigneeId?: string;
  parentId?: string;
  position?: string;
  storyPoints?: number | null;
}

/**
 * Conflict is an own update the server refused with CONFLICT: somebody
 * changed the item first. It stays in ProjectStateManager.conflicts until
 * the person chooses (resolveConflict): keep mine, or take theirs.
 */
export interface Conflict {
  key: string;
  projectId: string;
  itemId: string;
  /** The change the person made. */
  mine: ItemPatch;
  /** The item as the person saw it when making the change. */
  base: WorkItem | undefined;
  /** The item as it is now; undefined when it was deleted. */
  theirs: WorkItem | undefined;
}

/** ConflictError rejects an update that met CONFLICT; the conflict waits in ProjectStateManager.conflicts. */
export class ConflictError extends PmError {
  constructor(readonly conflict: Conflict) {
    super("CONFLICT", "Somebody changed this item first.");
  }
}

/** applyPatch returns item with patch applied (a copy). */
export function applyPatch(item: WorkItem, patch: ItemPatch): WorkItem {
  const out = { ...item };
  for (const [k, v] of Object.entries(patch) as [keyof ItemPatch, unknown][]) {
    if (v === undefined) continue;
    if (k === "storyPoints") out.storyPoints = v === null ? undefined : (v as number);
    else (out as Record<string, unknown>)[k] = v;
  }
  return out;
}

interface Waiter {
  resolve: (w: WorkItem) => void;
  reject: (e: unknown) => void;
}

/** Edit is an item's update in flight, and the changes made meanwhile, sent after it. */
interface Edit {
  patch: ItemPatch;
  base: WorkItem | undefined;
  waiters: Waiter[];
  next: { patch: ItemPatch; waiters: Waiter[] } | undefined;
}

interface SyncState {
  running: boolean;
  needed: boolean;
  /** The connection epoch the project was subscribed on. */
  subscribedOn: number;
  failures: number;
}

export interface ManagerOptions {
  /** Delays between failed resyncs. */
  backoff?: Backoff;
  random?: () => number;
}

/**
 * ProjectStateManager keeps the replicas (WorkItemState) of the projects the
 * board has open exact, and makes the person's changes. For each open
 * project it subscribes, loads, applies events, and resyncs from the last
 * revision after a gap, a ResyncRequired, or a reconnect. Its edits show at
 * once (the replica's overlay) and end in success, an error the caller
 * shows, or a Conflict the person resolves; never silently lost.
 */
export class ProjectStateManager {
  private readonly replicas = new Map<string, WorkItemState>();
  private readonly syncs = new Map<string, SyncState>();
  private readonly edits = new Map<string, Edit>();
  /** Creates not answered yet, by project/id: edits of the new item wait for them. */
  private readonly creating = new Map<string, Promise<WorkItem>>();
  private readonly memberLists = new Map<string, ProjectMember[]>();
  private conflictList: Conflict[] = [];
  private readonly conflictListeners = new Set<(c: readonly Conflict[]) => void>();
  private readonly memberListeners = new Set<(projectId: string) => void>();
  /** When each project's members were last reloaded for a name it lacked. */
  private readonly nameRefresh = new Map<string, number>();
  private readonly unlisten: (() => void)[];

  constructor(
    readonly client: ProjectManagementWebSocketClient,
    private readonly opts: ManagerOptions = {},
  ) {
    this.unlisten = [
      client.onPush((m) => this.handlePush(m)),
      client.onConnected(() => {
        // A running sync carries on over the new connection and subscribes
        // again at the end of its pass if it has to.
        for (const [id, s] of this.syncs) if (!s.running) this.requestSync(id);
      }),
    ];
  }

  /** dispose stops listening to the client; the replicas stay as they are. */
  dispose(): void {
    for (const f of this.unlisten) f();
  }

  // --- replicas ---

  /** open returns the project's replica, subscribing and loading it the first time. */
  open(projectId: string): WorkItemState {
    let r = this.replicas.get(projectId);
    if (r && r.status !== "closed") return r;
    r = new WorkItemState(projectId);
    this.replicas.set(projectId, r);
    this.syncs.set(projectId, { running: false, needed: false, subscribedOn: 0, failures: 0 });
    this.requestSync(projectId);
    return r;
  }

  /** close unsubscribes from a project and forgets its replica. */
  close(projectId: string): void {
    const r = this.replicas.get(projectId);
    if (!r) return;
    this.replicas.delete(projectId);
    this.syncs.delete(projectId);
    r.close("closed");
    if (this.client.state === "live") {
      this.client
        .request({ case: "unsubscribe", value: { projectIds: [projectId] } }, { resend: false })
        .catch(() => undefined); // the subscription ends with the connection anyway
    }
  }

  /** The open replica of a project, or undefined. */
  replica(projectId: string): WorkItemState | undefined {
    return this.replicas.get(projectId);
  }

  private handlePush(m: WebSocketMessage): void {
    const p = m.payload;
    switch (p.case) {
      case "resyncRequired":
        for (const id of p.value.projectIds) this.requestSync(id);
        return;
      case "subscriptionRevoked": {
        const r = this.replicas.get(p.value.projectId);
        if (r) {
          this.replicas.delete(p.value.projectId);
          this.syncs.delete(p.value.projectId);
          r.close(p.value.reason || "You no longer have access to this project.");
        }
        return;
      }
      default:
        this.applyEvent(m, true);
    }
  }

  /** applyEvent applies a work item change (event or own answer) to its replica. */
  private applyEvent(m: WebSocketMessage, remote: boolean): void {
    const ev = eventOf(m);
    if (!ev) return;
    const r = this.replicas.get(ev.projectId);
    if (r && r.applyEvent(ev, remote) === "gap") this.requestSync(ev.projectId);
  }

  /**
   * requestSync makes a project's replica catch up: subscribe (on a new
   * connection), then load everything (first time) or everything after its
   * revision. One sync runs per project at a time; asks meanwhile make it run
   * once more. Passing failures are retried with backoff; a refusal closes
   * the replica; a lost connection waits for the next one.
   */
  requestSync(projectId: string): void {
    const s = this.syncs.get(projectId);
    if (!s) return;
    s.needed = true;
    if (!s.running) void this.syncLoop(projectId, s);
  }

  private async syncLoop(projectId: string, s: SyncState): Promise<void> {
    s.running = true;
    try {
      while (s.needed && this.syncs.get(projectId) === s) {
        s.needed = false;
        const r = this.replicas.get(projectId);
        if (!r) return;
        try {
          if (s.subscribedOn !== this.client.epoch || this.client.epoch === 0) {
            await this.client.call({ case: "subscribe", value: { projectIds: [projectId] } }, "subscribeAck", {
              resend: false,
            });
            s.subscribedOn = this.client.epoch;
          }
          const since = r.isLoaded ? r.revision : 0n;
          const list = await this.client.call(
            { case: "getWorkItemsRequest", value: { projectId, sinceRevision: since } },
            "workItemsList",
            { resend: false },
          );
          r.applyList(since, list);
          if (r.hasGap || s.subscribedOn !== this.client.epoch) s.needed = true;
          s.failures = 0;
        } catch (err) {
          if (this.syncs.get(projectId) !== s) return;
          if (isRefusal(err)) {
            this.replicas.delete(projectId);
            this.syncs.delete(projectId);
            r.close(err instanceof PmError ? err.message : String(err));
            return;
          }
          if (isCode(err, "CLOSED")) return;
          if (isCode(err, "CONNECTION_LOST") && this.client.state !== "live") {
            // onConnected asks again on the next connection.
            s.subscribedOn = 0;
            return;
          }
          s.needed = true;
          await sleep(backoffDelay(s.failures++, this.opts.backoff, this.opts.random));
        }
      }
    } finally {
      s.running = false;
    }
  }

  // --- edits ---

  /**
   * createItem creates a work item with a client-made id (so a retry never
   * makes two) and shows it at once. It resolves with the item as created.
   */
  createItem(input: NewItem): Promise<WorkItem> {
    const id = crypto.randomUUID();
    const key = `${input.projectId}/${id}`;
    const done = this.create(id, input);
    this.creating.set(key, done);
    const forget = () => this.creating.delete(key);
    done.then(forget, forget);
    return done;
  }

  private async create(id: string, input: NewItem): Promise<WorkItem> {
    const r = this.replicas.get(input.projectId);
    const status = input.status || WorkItemStatus.BACKLOG;
    if (r) {
      const col = r.column(status);
      const provisional = create(WorkItemSchema, {
        id,
        projectId: input.projectId,
        parentId: input.parentId || input.projectId,
        itemType: input.itemType,
        title: input.title.trim(),
        description: input.description ?? "",
        status,
        priority: input.priority || WorkItemPriority.MEDIUM,
        assigneeId: input.assigneeId ?? "",
        storyPoints: input.storyPoints,
        position: input.position ?? safeKeyAfter(col.at(-1)?.position),
        createdBy: this.client.claims.sub,
      });
      r.setOverlay(id, () => provisional);
    }
    try {
      const created = await this.client.call(
        {
          case: "createWorkItemRequest",
          value: {
            workItemId: id,
            projectId: input.projectId,
            parentId: input.parentId ?? "",
            itemType: input.itemType,
            title: input.title,
            description: input.description ?? "",
            status: input.status ?? WorkItemStatus.UNSPECIFIED,
            priority: input.priority ?? WorkItemPriority.UNSPECIFIED,
            assigneeId: input.assigneeId ?? "",
            storyPoints: input.storyPoints,
            position: input.position ?? "",
          },
        },
        "workItemCreated",
      );
      this.applyOwn({ case: "workItemCreated", value: created });
      if (!created.workItem) throw new PmError("INTERNAL", "the answer has no work item");
      r?.settleOverlay(id, created.workItem.revision);
      return created.workItem;
    } catch (err) {
      r?.clearOverlay(id);
      this.maybeRan(input.projectId, err);
      throw err;
    }
  }

  /**
   * maybeRan resyncs a project after a write whose outcome is unknown (no
   * answer in time): the node may have run it, and a connection gets no
   * event for its own changes, so only a resync shows it.
   */
  private maybeRan(projectId: string, err: unknown): void {
    if (isCode(err, "TIMEOUT")) this.requestSync(projectId);
  }

  /** createProject creates a project; the caller becomes its admin. */
  async createProject(title: string, description = ""): Promise<WorkItem> {
    const created = await this.client.call(
      {
        case: "createWorkItemRequest",
        value: { workItemId: crypto.randomUUID(), itemType: WorkItemType.PROJECT, title, description },
      },
      "workItemCreated",
    );
    if (!created.workItem) throw new PmError("INTERNAL", "the answer has no work item");
    return created.workItem;
  }

  /**
   * updateItem changes an item's fields, showing the change at once. The
   * update carries the item's version in the replica, or
   * opts.expectedVersion: the version the person started from, when the
   * change was made over a while (a form) and somebody changed the same
   * fields meanwhile, so that the server answers CONFLICT. Changes
   * made while one is in flight are merged and sent after it, on its new
   * version. It resolves with the item as updated, or rejects with a
   * PmError, or with a ConflictError whose conflict waits in conflicts.
   */
  updateItem(projectId: string, itemId: string, patch: ItemPatch, opts: { expectedVersion?: bigint } = {}): Promise<WorkItem> {
    const r = this.replicas.get(projectId);
    const key = `${projectId}/${itemId}`;
    const creating = this.creating.get(key);
    if (creating) {
      // A new item the server has not confirmed yet: change it once it has.
      return creating.then(() => this.updateItem(projectId, itemId, patch, opts));
    }
    const server = r?.serverItem(itemId);
    if (!r || !server) return Promise.reject(new PmError("NOT_FOUND", "This item is gone."));
    return new Promise<WorkItem>((resolve, reject) => {
      const waiter = { resolve, reject };
      const inflight = this.edits.get(key);
      if (inflight) {
        inflight.next ??= { patch: {}, waiters: [] };
        inflight.next.patch = { ...inflight.next.patch, ...patch };
        inflight.next.waiters.push(waiter);
        this.showEdit(r, itemId, inflight);
        return;
      }
      const edit: Edit = { patch, base: r.get(itemId), waiters: [waiter], next: undefined };
      this.edits.set(key, edit);
      this.showEdit(r, itemId, edit);
      void this.sendEdit(r, key, itemId, edit, opts.expectedVersion ?? server.version);
    });
  }

  private showEdit(r: WorkItemState, itemId: string, e: Edit): void {
    const patch = { ...e.patch, ...e.next?.patch };
    r.setOverlay(itemId, (s) => (s ? applyPatch(s, patch) : null));
  }

  private async sendEdit(r: WorkItemState, key: string, itemId: string, e: Edit, expected: bigint): Promise<void> {
    const p = e.patch;
    let updated: WorkItem | undefined;
    try {
      const answer = await this.client.call(
        {
          case: "updateWorkItemRequest",
          value: {
            workItemId: itemId,
            expectedVersion: expected,
            title: p.title,
            description: p.description,
            status: p.status,
            priority: p.priority,
            assigneeId: p.assigneeId,
            parentId: p.parentId,
            position: p.position,
            storyPoints: p.storyPoints ?? undefined,
            clearStoryPoints: p.storyPoints === null,
          },
        },
        "workItemUpdated",
      );
      this.applyOwn({ case: "workItemUpdated", value: answer });
      updated = answer.workItem;
      if (!updated) throw new PmError("INTERNAL", "the answer has no work item");
    } catch (err) {
      this.edits.delete(key);
      this.maybeRan(r.projectId, err);
      const waiters = [...e.waiters, ...(e.next?.waiters ?? [])];
      let failure = err;
      if (isCode(err, "CONFLICT")) {
        failure = new ConflictError(await this.conflictOf(r, itemId, { ...e.patch, ...e.next?.patch }, e.base));
      }
      r.clearOverlay(itemId);
      for (const w of waiters) w.reject(failure);
      return;
    }
    for (const w of e.waiters) w.resolve(updated);
    if (e.next) {
      const next: Edit = { patch: e.next.patch, base: e.base, waiters: e.next.waiters, next: undefined };
      this.edits.set(key, next);
      this.showEdit(r, itemId, next);
      void this.sendEdit(r, key, itemId, next, updated.version);
      return;
    }
    this.edits.delete(key);
    r.settleOverlay(itemId, updated.revision);
  }

  /** conflictOf reads the other person's version (resyncing first) and records the conflict. */
  private async conflictOf(r: WorkItemState, itemId: string, mine: ItemPatch, base: WorkItem | undefined): Promise<Conflict> {
    try {
      await this.syncNow(r);
    } catch {
      // Show what the replica has; it catches up by itself.
    }
    const c: Conflict = {
      key: crypto.randomUUID(),
      projectId: r.projectId,
      itemId,
      mine,
      base,
      theirs: r.serverItem(itemId),
    };
    this.conflictList = [...this.conflictList, c];
    this.emitConflicts();
    return c;
  }

  /** syncNow fetches everything after the replica's revision and applies it. */
  private async syncNow(r: WorkItemState): Promise<void> {
    const since = r.revision;
    const list = await this.client.call(
      { case: "getWorkItemsRequest", value: { projectId: r.projectId, sinceRevision: since } },
      "workItemsList",
      { resend: false },
    );
    r.applyList(since, list);
  }

  /** Conflicts waiting for the person's choice, oldest first. */
  get conflicts(): readonly Conflict[] {
    return this.conflictList;
  }

  onConflicts(fn: (c: readonly Conflict[]) => void): () => void {
    this.conflictListeners.add(fn);
    return () => this.conflictListeners.delete(fn);
  }

  private emitConflicts(): void {
    for (const fn of this.conflictListeners) fn(this.conflictList);
  }

  /**
   * resolveConflict settles a conflict: "mine" applies the person's change
   * again on the item's current version (it may conflict again), "theirs"
   * drops it.
   */
  async resolveConflict(key: string, choice: "mine" | "theirs"): Promise<WorkItem | undefined> {
    const c = this.conflictList.find((x) => x.key === key);
    if (!c) return undefined;
    this.conflictList = this.conflictList.filter((x) => x !== c);
    this.emitConflicts();
    if (choice === "theirs") return c.theirs;
    return this.updateItem(c.projectId, c.itemId, c.mine);
  }

  /**
   * deleteItem deletes an item (soft), hiding it at once. DELETE_BLOCKED
   * (live children) rejects with the server's message saying how many.
   */
  async deleteItem(projectId: string, itemId: string): Promise<void> {
    const creating = this.creating.get(`${projectId}/${itemId}`);
    if (creating) await creating; // a new item: delete it once the server has it
    const r = this.replicas.get(projectId);
    r?.setOverlay(itemId, () => null);
    try {
      const answer = await this.client.call(
        { case: "deleteWorkItemRequest", value: { workItemId: itemId, expectedVersion: 0n } },
        "workItemDeleted",
      );
      this.applyOwn({ case: "workItemDeleted", value: answer });
      r?.settleOverlay(itemId, answer.revision || answer.workItem?.revision || 0n);
    } catch (err) {
      r?.clearOverlay(itemId);
      this.maybeRan(projectId, err);
      throw err;
    }
  }

  /** applyOwn applies the answer to one of our writes (the node sends us no event for it). */
  private applyOwn(payload: WebSocketMessage["payload"]): void {
    this.applyEvent({ payload } as WebSocketMessage, false);
  }

  // --- projects, members, activity ---

  /** listProjects returns the caller's projects with their role and counts by status. */
  async listProjects(): Promise<ProjectSummary[]> {
    const list = await this.client.call({ case: "listProjectsRequest", value: {} }, "projectsList");
    return list.projects;
  }

  /** The project's members as last loaded (loadMembers), or undefined. */
  members(projectId: string): readonly ProjectMember[] | undefined {
    return this.memberLists.get(projectId);
  }

  /** onMembers calls fn with the project id whenever a members list changes. */
  onMembers(fn: (projectId: string) => void): () => void {
    this.memberListeners.add(fn);
    return () => this.memberListeners.delete(fn);
  }

  /** displayName is a member's name, else email, else the start of the id. */
  displayName(projectId: string, userId: string): string {
    if (!userId) return "";
    if (userId === this.client.claims.sub && this.client.claims.name) return this.client.claims.name;
    const list = this.memberLists.get(projectId);
    const m = list?.find((x) => x.userId === userId);
    if (list && !m?.displayName) this.refreshNames(projectId);
    return m?.displayName || m?.email || userId.slice(0, 8);
  }

  /**
   * refreshNames reloads a project's members when a name was missing: a
   * person's name is recorded when they first connect, which may be after
   * this page loaded the list. At most once every 10 s per project.
   */
  private refreshNames(projectId: string): void {
    const now = Date.now();
    if (now - (this.nameRefresh.get(projectId) ?? 0) < 10_000) return;
    this.nameRefresh.set(projectId, now);
    this.loadMembers(projectId).catch(() => undefined); // names are a nicety: the id shows meanwhile
  }

  /** roleOf is the signed-in user's role in a project, from its members list. */
  roleOf(projectId: string): ProjectRole | undefined {
    return this.memberLists.get(projectId)?.find((m) => m.userId === this.client.claims.sub)?.role;
  }

  async loadMembers(projectId: string): Promise<readonly ProjectMember[]> {
    const list = await this.client.call(
      { case: "listProjectMembersRequest", value: { projectId } },
      "projectMembersList",
    );
    this.setMembers(projectId, list.members);
    return list.members;
  }

  /** addMember adds a member, or changes a member's role (admins). */
  async addMember(projectId: string, userId: string, role: ProjectRole): Promise<ProjectMember | undefined> {
    const ch = await this.client.call(
      { case: "addProjectMemberRequest", value: { projectId, userId, role } },
      "projectMemberChanged",
    );
    const m = ch.member;
    if (m) {
      const list = (this.memberLists.get(projectId) ?? []).filter((x) => x.userId !== m.userId);
      this.setMembers(projectId, [...list, m].sort((a, b) => (a.userId < b.userId ? -1 : 1)));
    }
    return m;
  }

  async removeMember(projectId: string, userId: string): Promise<void> {
    await this.client.call(
      { case: "removeProjectMemberRequest", value: { projectId, userId } },
      "projectMemberChanged",
    );
    const list = this.memberLists.get(projectId);
    if (list) this.setMembers(projectId, list.filter((x) => x.userId !== userId));
  }

  private setMembers(projectId: string, list: ProjectMember[]): void {
    this.memberLists.set(projectId, list);
    for (const fn of this.memberListeners) fn(projectId);
  }

  /** activity reads a page of a project's (or an item's) history, newest first. */
  activity(projectId: string, opts: { workItemId?: string; pageToken?: string; limit?: number } = {}): Promise<ActivityList> {
    return this.client.call(
      {
        case: "getActivityRequest",
        value: { projectId, workItemId: opts.workItemId ?? "", pageToken: opts.pageToken ?? "", limit: opts.limit ?? 50 },
      },
      "activityList",
    );
  }
}

/** safeKeyAfter is a key after key (or the first key), for showing a new item before the server places it. */
function safeKeyAfter(key: string | undefined): string {
  try {
    return generateKeyBetween(key ?? null, null);
  } catch {
    return key ?? "a0";
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
