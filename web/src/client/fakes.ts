// Test doubles: a fake WebSocket and an in-memory node that speaks the
// protocol of docs/protocol.md (subscriptions, revisions, chunked loads,
// versions, idempotency), so that the client's tests run without a server.
// Only tests import this file.
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import {
  WebSocketMessageSchema,
  WorkItemSchema,
  WorkItemPriority,
  WorkItemStatus,
  WorkItemType,
  type WebSocketMessage,
  type WorkItem,
} from "../gen/pm/v1/messages_pb";
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

  constructor(readonly userId = "u-1") {}

  /** serve answers a socket's requests; call open() on it to connect. */
  serve(s: FakeSocket): void {
    s.onSend = (m) => this.handle(s, m);
    this.subs.set(s, new Set());
  }

  /** addProject makes a project with items; their revisions count from 1. */
  addProject(projectId: string, items: WorkItem[] = []): void {
    const p: FakeProject = { rev: 0n, items: new Map() };
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
  change(projectId: string, id: string, fields: Partial<WorkItem>, origin?: FakeSocket): WorkItem {
    const p = this.project(projectId);
    const cur = p.items.get(id);
    p.rev++;
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
      default:
        return fail("INVALID_MESSAGE", "not handled by the fake node");
    }
  }
}

/** token makes an unsigned JWT with the given claims (the client does not check signatures). */
export function token(claims: Record<string, unknown> = {}): string {
  const b64 = (o: unknown) => btoa(JSON.stringify(o)).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
  return `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub: "u-1", tenant_id: "t-1", name: "Ada", exp: 4102444800, ...claims })}.sig`;
}
