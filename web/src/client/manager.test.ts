import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { WorkItemStatus, WorkItemType } from "../gen/pm/v1/messages_pb";
import { FakeNet, FakeNode, item, token, type FakeSocket } from "./fakes";
import { ConflictError, ProjectStateManager } from "./manager";
import { ProjectManagementWebSocketClient } from "./socket";

const P = "11111111-1111-4111-8111-111111111111";

let net: FakeNet;
let node: FakeNode;
let client: ProjectManagementWebSocketClient;
let m: ProjectStateManager;
/** Whether new sockets open by themselves (the node is up). */
let nodeUp: boolean;

beforeEach(() => {
  vi.useFakeTimers();
  net = new FakeNet();
  node = new FakeNode();
  nodeUp = true;
  net.onSocket = (s) => {
    node.serve(s);
    setTimeout(() => (nodeUp ? s.open() : s.drop(1006)), 1);
  };
  node.addProject(P, [
    item({ id: "a", title: "A", position: "a0", status: WorkItemStatus.TODO }),
    item({ id: "b", title: "B", position: "a1", status: WorkItemStatus.TODO }),
    item({ id: "c", title: "C", position: "a0", status: WorkItemStatus.DONE }),
  ]);
  client = new ProjectManagementWebSocketClient({
    url: "ws://board.test/ws",
    token: token(),
    createSocket: net.create,
    random: () => 0.5,
  });
  m = new ProjectStateManager(client, { random: () => 0.5 });
  client.connect();
});
afterEach(() => {
  client.close();
  vi.useRealTimers();
});

const settle = () => vi.advanceTimersByTimeAsync(5);
const ids = (status: WorkItemStatus) => m.replica(P)!.column(status).map((w) => w.id);
const sentCases = (s: FakeSocket) => s.sent.map((x) => x.payload.case);

async function openProject() {
  const r = m.open(P);
  await settle();
  expect(r.status).toBe("ready");
  return r;
}

describe("ProjectStateManager", () => {
  it("subscribes, then loads the project", async () => {
    const r = await openProject();
    expect(sentCases(net.last)).toEqual(["subscribe", "getWorkItemsRequest"]);
    expect(r.revision).toBe(4n);
    expect(ids(WorkItemStatus.TODO)).toEqual(["a", "b"]);
    expect(r.project?.itemType).toBe(WorkItemType.PROJECT);
  });

  it("loads a project that comes in chunks", async () => {
    node.chunkSize = 2;
    const r = await openProject();
    expect(net.last.sentOf("getWorkItemsRequest")).toHaveLength(1);
    expect(r.all()).toHaveLength(4);
  });

  it("applies other people's changes as they come", async () => {
    const r = await openProject();
    node.change(P, "a", { title: "A2", status: WorkItemStatus.DONE, position: "a1" });
    node.change(P, "d", { title: "new", status: WorkItemStatus.TODO, position: "a2" });
    node.remove(P, "c");
    expect(r.revision).toBe(7n);
    expect(ids(WorkItemStatus.TODO)).toEqual(["b", "d"]);
    expect(ids(WorkItemStatus.DONE)).toEqual(["a"]);
    expect(net.last.sentOf("getWorkItemsRequest")).toHaveLength(1); // no resync needed
  });

  it("puts events that arrive out of order back in order", async () => {
    const r = await openProject();
    node.holdEvents = true;
    node.change(P, "a", { title: "A5" });
    node.change(P, "a", { title: "A6" });
    node.change(P, "b", { title: "B7" });
    node.release([2, 1, 0]);
    await settle();
    expect(r.revision).toBe(7n);
    expect(r.get("a")?.title).toBe("A6");
    expect(r.get("b")?.title).toBe("B7");
  });

  it("ignores duplicate events", async () => {
    const r = await openProject();
    node.holdEvents = true;
    node.change(P, "a", { title: "A5" });
    node.release([0, 0]);
    node.change(P, "a", { title: "A6" });
    node.release([0]);
    node.held.length = 0;
    await settle();
    expect(r.revision).toBe(6n);
    expect(r.get("a")?.title).toBe("A6");
    expect(net.last.sentOf("getWorkItemsRequest")).toHaveLength(1);
  });

  it("resyncs from its last revision when an event is missing", async () => {
    const r = await openProject();
    node.holdEvents = true;
    node.change(P, "a", { title: "lost" });
    node.change(P, "b", { title: "B6" });
    node.release([1]); // 5 never arrives
    await settle();
    const gets = net.last.sentOf("getWorkItemsRequest");
    expect(gets).toHaveLength(2);
    expect(gets[1]?.payload.value).toMatchObject({ projectId: P, sinceRevision: 4n });
    expect(r.revision).toBe(6n);
    expect(r.get("a")?.title).toBe("lost");
    expect(r.hasGap).toBe(false);
  });

  it("resyncs on ResyncRequired", async () => {
    const r = await openProject();
    node.holdEvents = true;
    node.change(P, "a", { title: "dropped by redis" });
    node.held.length = 0;
    net.last.push({ case: "resyncRequired", value: { projectIds: [P], reason: "redis" } });
    await settle();
    expect(net.last.sentOf("getWorkItemsRequest")[1]?.payload.value).toMatchObject({ sinceRevision: 4n });
    expect(r.get("a")?.title).toBe("dropped by redis");
  });

  it("after a reconnect, subscribes again and catches up from its revision: no gap, no duplicate", async () => {
    const r = await openProject();
    const first = net.last;
    first.drop(4000);
    expect(client.state).toBe("reconnecting");
    node.change(P, "a", { title: "while away" });
    node.remove(P, "b");
    await vi.advanceTimersByTimeAsync(500);
    const second = net.last;
    expect(second).not.toBe(first);
    expect(sentCases(second)).toEqual(["subscribe", "getWorkItemsRequest"]);
    expect(second.sentOf("getWorkItemsRequest")[0]?.payload.value).toMatchObject({ sinceRevision: 4n });
    expect(r.revision).toBe(6n);
    expect(r.get("a")?.title).toBe("while away");
    expect(r.get("b")).toBeUndefined();
    node.change(P, "c", { title: "live again" });
    expect(r.revision).toBe(7n);
    expect(r.get("c")?.title).toBe("live again");
  });

  it("closes the project with a message on SubscriptionRevoked", async () => {
    const r = await openProject();
    net.last.push({ case: "subscriptionRevoked", value: { projectId: P, reason: "removed from the project" } });
    expect(r.status).toBe("closed");
    expect(r.closedReason).toBe("removed from the project");
    expect(m.replica(P)).toBeUndefined();
  });

  it("closes a project the user may not see", async () => {
    const r = m.open("22222222-2222-4222-8222-222222222222");
    await settle();
    expect(r.status).toBe("closed");
    expect(r.closedReason).toBe("no such project");
  });

  it("shows an edit at once and applies the answer", async () => {
    const r = await openProject();
    const done = m.updateItem(P, "a", { status: WorkItemStatus.DONE, position: "a1" });
    expect(ids(WorkItemStatus.DONE)).toEqual(["c", "a"]);
    expect(r.isPending("a")).toBe(true);
    const w = await done;
    expect(w.version).toBe(2n);
    expect(r.isPending("a")).toBe(false);
    expect(r.serverItem("a")?.status).toBe(WorkItemStatus.DONE);
    expect(r.revision).toBe(5n);
  });

  it("keeps showing an edit answered past a gap until the resync fills it: no jump back", async () => {
    const r = await openProject();
    node.holdEvents = true;
    node.change(P, "b", { title: "theirs, on its way" }); // revision 5, held
    node.silent = true; // hold the resync too
    const edit = m.updateItem(P, "a", { status: WorkItemStatus.DONE });
    node.silent = false;
    const s = net.last;
    s.onSend?.(s.sentOf("updateWorkItemRequest")[0]!); // answered at revision 6: past the gap
    node.silent = true; // before the answer is handled: the resync it starts gets no answer yet
    await edit;
    await settle();
    expect(r.revision).toBe(4n);
    expect(r.get("a")?.status).toBe(WorkItemStatus.DONE); // still shown where the person put it
    node.silent = false;
    const get = s.sentOf("getWorkItemsRequest").at(-1)!;
    s.onSend?.(get);
    await settle();
    expect(r.revision).toBe(6n);
    expect(r.isPending("a")).toBe(false);
    expect(r.get("a")?.status).toBe(WorkItemStatus.DONE);
    expect(r.get("b")?.title).toBe("theirs, on its way");
  });

  it("sends edits made while reconnecting once connected, each once, with its original message_id", async () => {
    const r = await openProject();
    nodeUp = false;
    net.last.drop(1001);
    const edit = m.updateItem(P, "a", { title: "offline edit" });
    const create = m.createItem({ projectId: P, itemType: WorkItemType.TASK, title: "offline card", status: WorkItemStatus.TODO });
    expect(r.get("a")?.title).toBe("offline edit");
    expect(ids(WorkItemStatus.TODO)).toHaveLength(3);
    await vi.advanceTimersByTimeAsync(5_000); // a few refused attempts
    expect(client.state).not.toBe("live");
    nodeUp = true;
    await vi.advanceTimersByTimeAsync(20_000);
    expect(client.state).toBe("live");
    await edit;
    const made = await create;
    expect(node.writes).toBe(2);
    const sent = net.sockets.flatMap((s) => s.sent).filter((x) => x.payload.case === "updateWorkItemRequest");
    expect(sent).toHaveLength(1);
    expect(r.get("a")?.title).toBe("offline edit");
    expect(r.get(made.id)?.title).toBe("offline card");
    expect(r.revision).toBe(6n);
  });

  it("re-sends an edit whose answer was lost, and the node runs it once", async () => {
    const r = await openProject();
    node.loseAnswers = true; // the node runs it, but the answer is lost with the connection
    const edit = m.updateItem(P, "a", { title: "once" });
    await settle();
    node.loseAnswers = false;
    const first = net.last;
    const id = first.sentOf("updateWorkItemRequest")[0]!.messageId;
    expect(node.writes).toBe(1);
    first.drop(1006);
    await vi.advanceTimersByTimeAsync(1_000);
    await edit;
    expect(net.last.sentOf("updateWorkItemRequest")[0]?.messageId).toBe(id);
    expect(node.writes).toBe(1);
    expect(r.get("a")?.title).toBe("once");
  });

  it("sends edits made while one is in flight after it, on its new version", async () => {
    const r = await openProject();
    node.silent = true;
    const one = m.updateItem(P, "a", { title: "one" });
    const two = m.updateItem(P, "a", { position: "a5" });
    const three = m.updateItem(P, "a", { title: "three" });
    expect(r.get("a")).toMatchObject({ title: "three", position: "a5" });
    node.silent = false;
    const s = net.last;
    s.onSend?.(s.sentOf("updateWorkItemRequest")[0]!);
    await Promise.all([one, two, three]);
    const ups = s.sentOf("updateWorkItemRequest").map((x) => x.payload.value);
    expect(ups).toHaveLength(2);
    expect(ups[1]).toMatchObject({ expectedVersion: 2n, title: "three", position: "a5" });
    expect(r.serverItem("a")).toMatchObject({ title: "three", position: "a5", version: 3n });
  });

  it("turns CONFLICT into a conflict showing their version; keep mine re-applies it on theirs", async () => {
    const r = await openProject();
    node.holdEvents = true; // their change has not reached us yet
    node.change(P, "a", { title: "theirs", priority: 4 });
    const conflicts: number[] = [];
    m.onConflicts((c) => conflicts.push(c.length));
    const err = await m.updateItem(P, "a", { title: "mine" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConflictError);
    const c = (err as ConflictError).conflict;
    expect(c.mine).toEqual({ title: "mine" });
    expect(c.base?.title).toBe("A");
    expect(c.theirs).toMatchObject({ title: "theirs", version: 2n });
    expect(m.conflicts).toEqual([c]);
    expect(r.get("a")?.title).toBe("theirs"); // the overlay is gone: nothing hidden
    const w = await m.resolveConflict(c.key, "mine");
    expect(w).toMatchObject({ title: "mine", priority: 4, version: 3n });
    expect(m.conflicts).toEqual([]);
    expect(conflicts).toEqual([1, 0]);
  });

  it("take theirs drops my change", async () => {
    const r = await openProject();
    node.change(P, "a", { title: "theirs" });
    node.holdEvents = true;
    node.change(P, "a", { title: "theirs again" });
    const err = await m.updateItem(P, "a", { title: "mine" }).catch((e: unknown) => e as ConflictError);
    const writes = node.writes;
    expect(await m.resolveConflict((err as ConflictError).conflict.key, "theirs")).toMatchObject({ title: "theirs again" });
    expect(node.writes).toBe(writes);
    expect(r.get("a")?.title).toBe("theirs again");
  });

  it("shows a new item at once; a refused create shows the field and removes it", async () => {
    const r = await openProject();
    const ok = m.createItem({ projectId: P, itemType: WorkItemType.STORY, title: "Story", status: WorkItemStatus.REVIEW });
    expect(ids(WorkItemStatus.REVIEW)).toHaveLength(1);
    const made = await ok;
    expect(ids(WorkItemStatus.REVIEW)).toEqual([made.id]);
    const sent = net.last.sentOf("createWorkItemRequest")[0]!.payload.value as { workItemId: string };
    expect(sent.workItemId).toBe(made.id);
    const bad = m.createItem({ projectId: P, itemType: WorkItemType.TASK, title: "  ", status: WorkItemStatus.REVIEW });
    expect(ids(WorkItemStatus.REVIEW)).toHaveLength(2);
    await expect(bad).rejects.toMatchObject({ code: "VALIDATION_ERROR", field: "title" });
    expect(ids(WorkItemStatus.REVIEW)).toEqual([made.id]);
    expect(r.revision).toBe(5n);
  });

  it("holds an edit of a new item until the server confirmed the create", async () => {
    const r = await openProject();
    node.silent = true;
    const made = m.createItem({ projectId: P, itemType: WorkItemType.TASK, title: "new", status: WorkItemStatus.TODO });
    const id = (net.last.sentOf("createWorkItemRequest")[0]!.payload.value as { workItemId: string }).workItemId;
    const moved = m.updateItem(P, id, { status: WorkItemStatus.DONE });
    node.silent = false;
    net.last.onSend?.(net.last.sentOf("createWorkItemRequest")[0]!);
    await made;
    const w = await moved;
    expect(w).toMatchObject({ id, status: WorkItemStatus.DONE, version: 2n });
    expect(r.get(id)?.status).toBe(WorkItemStatus.DONE);
    expect(net.last.sentOf("updateWorkItemRequest")[0]?.payload.value).toMatchObject({ expectedVersion: 1n });
  });

  it("hides a deleted item at once, and shows it again when the delete is blocked", async () => {
    const r = await openProject();
    node.change(P, "kid", { parentId: "a", title: "child" });
    const blocked = m.deleteItem(P, "a");
    expect(r.get("a")).toBeUndefined();
    await expect(blocked).rejects.toMatchObject({ code: "DELETE_BLOCKED", message: "blocked by 1 children" });
    expect(r.get("a")?.title).toBe("A");
    await m.deleteItem(P, "c");
    expect(r.get("c")).toBeUndefined();
    expect(r.serverItem("c")).toBeUndefined();
  });

  it("keeps edits through an expired token and sends them after signing in again", async () => {
    const r = await openProject();
    net.last.drop(4500);
    expect(client.state).toBe("offline");
    const edit = m.updateItem(P, "b", { title: "after sign-in" });
    await vi.advanceTimersByTimeAsync(60_000);
    expect(node.writes).toBe(0);
    client.setToken(token({ exp: 4102444900 }));
    await vi.advanceTimersByTimeAsync(10);
    await edit;
    expect(node.writes).toBe(1);
    expect(r.get("b")?.title).toBe("after sign-in");
    expect(r.hasGap).toBe(false);
  });

  it("resyncs after an edit that got no answer, to learn whether it ran", async () => {
    const r = await openProject();
    node.loseAnswers = true; // it runs, but the answer never comes
    const edit = m.updateItem(P, "a", { title: "did it?" }).catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(100);
    node.loseAnswers = false;
    await vi.advanceTimersByTimeAsync(30_000);
    expect(await edit).toMatchObject({ code: "TIMEOUT" });
    await vi.advanceTimersByTimeAsync(2_000); // reconnect and resync
    expect(client.state).toBe("live");
    expect(r.get("a")?.title).toBe("did it?");
    expect(r.revision).toBe(5n);
  });

  it("retries a failed resync with backoff", async () => {
    const r = await openProject();
    node.holdEvents = true;
    node.change(P, "a", { title: "missed" });
    node.change(P, "b", { title: "B6" });
    node.release([1]);
    // The resync meets a hung node and times out, then succeeds.
    node.silent = true;
    await vi.advanceTimersByTimeAsync(100);
    node.silent = false;
    await vi.advanceTimersByTimeAsync(31_000);
    expect(r.get("a")?.title).toBe("missed");
    expect(r.revision).toBe(6n);
  });

  it("carries on over an in-band token refresh: no reconnect, no resync, edits and events flow", async () => {
    const r = await openProject();
    const s = net.last;
    const before = s.sent.length;
    const edit = m.updateItem(P, "a", { title: "during the refresh" });
    const refreshed = client.refreshToken(token({ exp: 4102444900 }));
    await settle();
    await expect(refreshed).resolves.toBeUndefined();
    await expect(edit).resolves.toMatchObject({ title: "during the refresh" });
    node.change(P, "b", { title: "theirs, after" });
    await settle();
    expect(r.get("b")?.title).toBe("theirs, after");
    expect(sentCases(s).slice(before)).toEqual(["updateWorkItemRequest", "refreshTokenRequest"]);
    expect(net.sockets).toHaveLength(1);
    expect(client.epoch).toBe(1);
    expect(client.claims.exp).toBe(4102444900);
  });
});
