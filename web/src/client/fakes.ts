// Test doubles: a fake WebSocket and an in-memory node that speaks the
// protocol of docs/protocol.md (subscriptions, revisions, chunked loads,
// versions, idempotency), so that the client's tests run without a server.
// Only tests import this file.
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import {
  ActivityAction,
  ActivityEntrySchema,
  ProjectMemberSchema,
  ProjectRole,
  WebSocketMessageSchema,
  WorkItemSchema,
  WorkItemPriority,
  WorkItemStatus,
  WorkItemType,
  type ActivityEntry,
  type ProjectMember,
  type WebSocketMessage,
  type WorkItem,
} from "../gen/pm/v1/messages_pb";
import { decodeClaims } from "./jwt";
import type { PayloadInit, WebSocketLike } from "./socket";

/** FakeSocket is one connection: the client's end, driven by the test or a FakeNode. */
export class FakeSocket implements WebSocketLike {
  binaryType = "";
  onopen: ((ev: unknown) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  /** Every frame the client sent, decoded. */
  readonly sent: WebSocketMessage[] = [];
  /** Set when the client closed the socket. */
  closedByClient: { code?: number; reason?: string } | undefined;
  /** Called for each frame the client sends (a FakeNode answers here). */
  onSend: ((m: WebSocketMessage) => void) | undefined;
  isOpen = false;

  constructor(readonly url: string) {}

  send(data: Uint8Array): void {
    const m = fromBinary(WebSocketMessageSchema, data);
    this.sent.push(m);
    this.onSend?.(m);
  }

  close(code?: number, reason?: string): void {
    this.closedByClient = { code, reason };
    this.isOpen = false;
  }

  /** open completes the handshake. */
  open(): void {
    this.isOpen = true;
    this.onopen?.({});
  }

  /** deliver sends the client a message. */
  deliver(messageId: string, payload: PayloadInit): void {
    const m = create(WebSocketMessageSchema, { messageId, timestamp: 1n, payload });
    const bytes = toBinary(WebSocketMessageSchema, m);
    this.onmessage?.({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) });
  }

  /** push sends the client an event with a server-made id. */
  push(payload: PayloadInit): void {
    this.deliver(`srv-${crypto.randomUUID()}`, payload);
  }

  /** drop ends the connection from the server's side with a close code. */
  drop(code: number, reason = ""): void {
    this.isOpen = false;
    this.onclose?.({ code, reason });
  }

  /** sentOf returns the sent messages of one payload case. */
  sentOf(c: NonNullable<WebSocketMessage["payload"]["case"]>): WebSocketMessage[] {
    return this.sent.filter((m) => m.payload.case === c);
  }
}

/** FakeNet makes FakeSockets for a client and remembers them. */
export class FakeNet {
  readonly sockets: FakeSocket[] = [];
  /** Called for each new socket (e.g. to attach a FakeNode). */
  onSocket: ((s: FakeSocket) => void) | undefined;

  readonly create = (url: string): FakeSocket => {
    const s = new FakeSocket(url);
    this.sockets.push(s);
    this.onSocket?.(s);
    return s;
  };

  get last(): FakeSocket {
    const s = this.sockets.at(-1);
    if (!s) throw new Error("no socket yet");
    return s;
  }
}

export type ItemInit = MessageInitShape<typeof WorkItemSchema>;

/** item makes a work item for tests. */
export function item(init: ItemInit): WorkItem {
  return create(WorkItemSchema, {
    itemType: WorkItemType.TASK,
    status: WorkItemStatus.TODO,
    priority: WorkItemPriority.MEDIUM,
    version: 1n,
    title: "item",
    ...init,
  });
}

interface FakeProject {
  rev: bigint;
  /** Every item, tombstones included, by id. */
  items: Map<string, WorkItem>;
  members: ProjectMember[];
  /** Newest last. */
  activity: ActivityEntry[];
}

/**
 * FakeNode is an in-memory node: it answers the requests of the sockets it
 * serves and pushes events to the other subscribers, like the real one.
 * Tests can hold events back (held) to reorder, drop or duplicate them.
 */
export class FakeNode {
  readonly projects = new Map<string, FakeProject>();
  private readonly subs = new Map<FakeSocket, Set<string>>();
  /** Answers by message_id, for idempotent replays of writes. */
  private readonly answers = new Map<string, PayloadInit>();
  /** Items per WorkItemsList chunk. */
  chunkSize = 1000;
  /** When true, events are kept in held instead of delivered. */
  holdEvents = false;
  readonly held: { socket: FakeSocket; payload: PayloadInit }[] = [];
  /** Writes the node ran (replays not counted). */
  writes = 0;
  /** When set, requests are not answered (a hung node). */
  silent = false;
  /** When set, requests run but their answers are lost. */
  loseAnswers = false;
  /** When set, RefreshTokenRequests are refused UNAUTHORIZED with this message. */
  refuseRefresh = "";
  /** The tokens of the RefreshTokenRequests the node accepted. */
  readonly refreshed: string[] = [];

  constructor(readonly userId = "u-1") {}

  /** serve answers a socket's requests; call open() on it to connect. */
  serve(s: FakeSocket): void {
    s.onSend = (m) => this.handle(s, m);
    this.subs.set(s, new Set());
  }

  /** addProject makes a project with items; their revisions count from 1. */
  addProject(projectId: string, items: WorkItem[] = []): void {
    const p: FakeProject = {
      rev: 0n,
      items: new Map(),
      members: [create(ProjectMemberSchema, { projectId, userId: this.userId, role: ProjectRole.ADMIN, displayName: "You" })],
      activity: [],
    };
    this.projects.set(projectId, p);
    for (const w of [item({ id: projectId, projectId, itemType: WorkItemType.PROJECT, title: "Project", position: "a0" }), ...items]) {
      p.rev++;
      p.items.set(w.id, { ...w, projectId, revision: p.rev });
    }
  }

  /**
   * change makes a change as another user would: it bumps the revision and
   * pushes the event to subscribers (except origin).
   */
  change(projectId: string, id: string, fields: Partial<WorkItem>, origin?: FakeSocket, actor = "someone-else"): WorkItem {
    const p = this.project(projectId);
    const cur = p.items.get(id);
    p.rev++;
    this.record(p, projectId, id, cur ? ActivityAction.UPDATED : ActivityAction.CREATED, origin ? this.userId : actor, cur, fields);
    const w = create(WorkItemSchema, {
      ...(cur ?? item({ id, projectId, parentId: projectId })),
      ...fields,
      projectId,
      revision: p.rev,
      version: (cur?.version ?? 0n) + 1n,
    });
    p.items.set(id, w);
    const payload: PayloadInit = cur
      ? { case: "workItemUpdated", value: { workItem: w } }
      : { case: "workItemCreated", value: { workItem: w } };
    this.publish(projectId, payload, origin);
    return w;
  }

  /** remove deletes an item as another user would. */
  remove(projectId: string, id: string, origin?: FakeSocket): void {
    const p = this.project(projectId);
    const cur = p.items.get(id);
    if (!cur) throw new Error("no such item");
    p.rev++;
    this.record(p, projectId, id, ActivityAction.DELETED, origin ? this.userId : "someone-else");
    const w = { ...cur, deletedAt: 1n, revision: p.rev, version: cur.version + 1n };
    p.items.set(id, w);
    this.publish(projectId, { case: "workItemDeleted", value: { workItemId: id, projectId, revision: p.rev, workItem: w } }, origin);
  }

  /** release delivers held events in the given order (all, in order, by default). */
  release(order?: number[]): void {
    const all = this.held.splice(0);
    for (const i of order ?? all.map((_, i) => i)) {
      const h = all[i];
      if (h) h.socket.push(h.payload);
    }
  }

  /** addMember makes a user a member of a project. */
  addMember(projectId: string, userId: string, role: ProjectRole, displayName = ""): void {
    const p = this.project(projectId);
    p.members = [...p.members.filter((m) => m.userId !== userId), create(ProjectMemberSchema, { projectId, userId, role, displayName })].sort(
      (a, b) => (a.userId < b.userId ? -1 : 1),
    );
  }

  private record(p: FakeProject, projectId: string, id: string, action: ActivityAction, actor: string, cur?: WorkItem, fields: Partial<WorkItem> = {}): void {
    const changes = cur
      ? Object.entries(fields)
          .filter(([k, v]) => v !== (cur as unknown as Record<string, unknown>)[k])
          .map(([k, v]) => ({
            fieldName: k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`),
            oldValue: text((cur as unknown as Record<string, unknown>)[k], k),
            newValue: text(v, k),
          }))
      : [{ fieldName: "title", oldValue: "", newValue: String(fields.title ?? "") }];
    p.activity.push(
      create(ActivityEntrySchema, {
        id: BigInt(p.activity.length + 1),
        projectId,
        workItemId: id,
        actorId: actor,
        action,
        changes,
        revision: p.rev,
        createdAt: BigInt(Date.now()),
      }),
    );
  }

  private project(id: string): FakeProject {
    const p = this.projects.get(id);
    if (!p) throw new Error(`no project ${id}`);
    return p;
  }

  private publish(projectId: string, payload: PayloadInit, origin?: FakeSocket): void {
    for (const [s, set] of this.subs) {
      if (s === origin || !set.has(projectId) || !s.isOpen) continue;
      if (this.holdEvents) this.held.push({ socket: s, payload });
      else s.push(payload);
    }
  }

  private handle(s: FakeSocket, m: WebSocketMessage): void {
    if (this.silent) return;
    const id = m.messageId;
    const reply = (payload: PayloadInit) => {
      if (!this.loseAnswers) s.deliver(id, payload);
    };
    const fail = (code: string, message: string, extra: { field?: string; currentVersion?: bigint } = {}) => {
      const e: PayloadInit = { case: "error", value: { code, message, ...extra } };
      if (m.payload.case !== "getWorkItemsRequest") this.answers.set(id, e);
      reply(e);
    };
    const replay = this.answers.get(id);
    if (replay) return reply(replay);
    const p = m.payload;
    switch (p.case) {
      case "subscribe": {
        const revisions: Record<string, bigint> = {};
        for (const pid of p.value.projectIds) {
          if (!this.projects.has(pid)) return fail("NOT_FOUND", "no such project");
          this.subs.get(s)?.add(pid);
          revisions[pid] = this.project(pid).rev;
        }
        return reply({ case: "subscribeAck", value: { projectIds: p.value.projectIds, revisions } });
      }
      case "unsubscribe":
        for (const pid of p.value.projectIds) this.subs.get(s)?.delete(pid);
        return reply({ case: "unsubscribeAck", value: { projectIds: p.value.projectIds } });
      case "getWorkItemsRequest": {
        const proj = this.projects.get(p.value.projectId);
        if (!proj) return fail("NOT_FOUND", "no such project");
        const since = p.value.sinceRevision;
        const items = [...proj.items.values()]
          .filter((w) => (since === 0n ? w.deletedAt === 0n : w.revision > since))
          .sort((a, b) => (a.position < b.position ? -1 : a.position > b.position ? 1 : a.id < b.id ? -1 : 1));
        const asOf = proj.rev;
        for (let i = 0; i === 0 || i < items.length; i += this.chunkSize) {
          const chunk = items.slice(i, i + this.chunkSize);
          const complete = i + this.chunkSize >= items.length;
          reply({ case: "workItemsList", value: { workItems: chunk, asOfRevision: asOf, projectId: p.value.projectId, complete } });
        }
        return;
      }
      case "createWorkItemRequest": {
        const v = p.value;
        if (!v.title.trim()) return fail("VALIDATION_ERROR", "title is required", { field: "title" });
        const pid = v.projectId;
        this.writes++;
        const w = this.change(pid, v.workItemId, {
          title: v.title,
          itemType: v.itemType,
          parentId: v.parentId || pid,
          status: v.status || WorkItemStatus.BACKLOG,
          priority: v.priority || WorkItemPriority.MEDIUM,
          position: v.position || "b0",
          createdBy: this.userId,
        }, s);
        const answer: PayloadInit = { case: "workItemCreated", value: { workItem: w } };
        this.answers.set(id, answer);
        return reply(answer);
      }
      case "updateWorkItemRequest": {
        const v = p.value;
        const pid = [...this.projects].find(([, pr]) => pr.items.has(v.workItemId))?.[0];
        const cur = pid ? this.project(pid).items.get(v.workItemId) : undefined;
        if (!pid || !cur || cur.deletedAt !== 0n) return fail("NOT_FOUND", "no such item");
        if (v.expectedVersion !== cur.version) {
          return fail("CONFLICT", "the item changed", { currentVersion: cur.version });
        }
        this.writes++;
        const fields: Partial<WorkItem> = {};
        if (v.title !== undefined) fields.title = v.title;
        if (v.description !== undefined) fields.description = v.description;
        if (v.status !== undefined) fields.status = v.status;
        if (v.priority !== undefined) fields.priority = v.priority;
        if (v.assigneeId !== undefined) fields.assigneeId = v.assigneeId;
        if (v.position !== undefined) fields.position = v.position;
        if (v.storyPoints !== undefined) fields.storyPoints = v.storyPoints;
        if (v.clearStoryPoints) fields.storyPoints = undefined;
        const w = this.change(pid, v.workItemId, fields, s);
        const answer: PayloadInit = { case: "workItemUpdated", value: { workItem: w } };
        this.answers.set(id, answer);
        return reply(answer);
      }
      case "deleteWorkItemRequest": {
        const v = p.value;
        const pid = [...this.projects].find(([, pr]) => pr.items.has(v.workItemId))?.[0];
        if (!pid) return fail("NOT_FOUND", "no such item");
        const proj = this.project(pid);
        const children = [...proj.items.values()].filter((w) => w.parentId === v.workItemId && w.deletedAt === 0n);
        if (children.length > 0) {
          return fail("DELETE_BLOCKED", `blocked by ${children.length} children`);
        }
        this.writes++;
        this.remove(pid, v.workItemId, s);
        const w = proj.items.get(v.workItemId);
        const answer: PayloadInit = {
          case: "workItemDeleted",
          value: { workItemId: v.workItemId, projectId: pid, revision: proj.rev, workItem: w },
        };
        this.answers.set(id, answer);
        return reply(answer);
      }
      case "listProjectsRequest": {
        const projects = [...this.projects].flatMap(([pid, pr]) => {
          const me = pr.members.find((x) => x.userId === this.userId);
          const project = pr.items.get(pid);
          if (!me || !project) return [];
          const counts = new Map<WorkItemStatus, bigint>();
          for (const w of pr.items.values()) {
            if (w.deletedAt !== 0n || w.itemType === WorkItemType.PROJECT) continue;
            counts.set(w.status, (counts.get(w.status) ?? 0n) + 1n);
          }
          return [{ project, role: me.role, revision: pr.rev, counts: [...counts].map(([status, count]) => ({ status, count })) }];
        });
        return reply({ case: "projectsList", value: { projects } });
      }
      case "listProjectMembersRequest": {
        const pr = this.projects.get(p.value.projectId);
        if (!pr) return fail("NOT_FOUND", "no such project");
        return reply({ case: "projectMembersList", value: { projectId: p.value.projectId, members: pr.members } });
      }
      case "addProjectMemberRequest":
      case "removeProjectMemberRequest": {
        const v = p.value;
        const pr = this.projects.get(v.projectId);
        if (!pr) return fail("NOT_FOUND", "no such project");
        if (pr.members.find((x) => x.userId === this.userId)?.role !== ProjectRole.ADMIN) return fail("UNAUTHORIZED", "admins only");
        const before = pr.members.find((x) => x.userId === v.userId);
        if (p.case === "removeProjectMemberRequest") {
          if (!before) return fail("NOT_FOUND", "no such member", { field: "user_id" });
          pr.members = pr.members.filter((x) => x !== before);
          return reply({ case: "projectMemberChanged", value: { member: before, removed: true } });
        }
        this.addMember(v.projectId, v.userId, v.role, before?.displayName ?? "");
        return reply({ case: "projectMemberChanged", value: { member: pr.members.find((x) => x.userId === v.userId) } });
      }
      case "getActivityRequest": {
        const v = p.value;
        const pr = this.projects.get(v.projectId);
        if (!pr) return fail("NOT_FOUND", "no such project");
        const all = pr.activity.filter((e) => !v.workItemId || e.workItemId === v.workItemId).reverse();
        const start = Number(v.pageToken || "0");
        const limit = v.limit || 50;
        const entries = all.slice(start, start + limit);
        const next = start + limit < all.length ? String(start + limit) : "";
        return reply({ case: "activityList", value: { entries, nextPageToken: next } });
      }
      case "refreshTokenRequest": {
        if (this.refuseRefresh) return reply({ case: "error", value: { code: "UNAUTHORIZED", message: this.refuseRefresh, field: "token" } });
        this.refreshed.push(p.value.token);
        return reply({ case: "tokenRefreshed", value: { expiresAt: BigInt(decodeClaims(p.value.token).exp) * 1000n } });
      }
      default:
        return fail("INVALID_MESSAGE", "not handled by the fake node");
    }
  }
}

/** text writes a field's value as the server does in a FieldChange: enums by lower-case name. */
function text(v: unknown, field = ""): string {
  if (field === "status" && typeof v === "number") return (WorkItemStatus[v] ?? "").toLowerCase();
  if (field === "priority" && typeof v === "number") return (WorkItemPriority[v] ?? "").toLowerCase();
  return typeof v === "string" || typeof v === "number" || typeof v === "bigint" ? String(v) : "";
}

/** token makes an unsigned JWT with the given claims (the client does not check signatures). */
export function token(claims: Record<string, unknown> = {}): string {
  const b64 = (o: unknown) => btoa(JSON.stringify(o)).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
  return `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub: "u-1", tenant_id: "t-1", name: "Ada", exp: 4102444800, ...claims })}.sig`;
}
