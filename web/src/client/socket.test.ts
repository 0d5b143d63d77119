import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { FakeNet, item, token } from "./fakes";
import { PmError } from "./errors";
import { ProjectManagementWebSocketClient, type ClientOptions, type Problem } from "./socket";

let net: FakeNet;

function newClient(opts: Partial<ClientOptions> = {}) {
  const c = new ProjectManagementWebSocketClient({
    url: "ws://board.test/ws",
    token: token(),
    createSocket: net.create,
    random: () => 0.5,
    ...opts,
  });
  const states: string[] = [];
  const pushes: string[] = [];
  const problems: Problem[] = [];
  c.onState((s) => states.push(s));
  c.onPush((m) => pushes.push(m.messageId));
  c.onProblem((p) => problems.push(p));
  return { c, states, pushes, problems };
}

const get = { case: "getWorkItemsRequest", value: { projectId: "p" } } as const;

beforeEach(() => {
  vi.useFakeTimers();
  net = new FakeNet();
});
afterEach(() => {
  vi.useRealTimers();
});

describe("ProjectManagementWebSocketClient", () => {
  it("connects with the token in the query and binary frames", () => {
    const { c, states } = newClient();
    c.connect();
    expect(net.last.url).toBe(`ws://board.test/ws?access_token=${encodeURIComponent(token())}`);
    expect(net.last.binaryType).toBe("arraybuffer");
    net.last.open();
    expect(states).toEqual(["connecting", "live"]);
    expect(c.epoch).toBe(1);
  });

  it("correlates answers by message_id and passes everything else on as pushes", async () => {
    const { c, pushes } = newClient();
    c.connect();
    const s = net.last;
    s.open();
    const a = c.request(get);
    const b = c.call({ case: "listProjectsRequest", value: {} }, "projectsList");
    const [ma, mb] = s.sent;
    s.push({ case: "resyncRequired", value: { projectIds: ["p"] } });
    s.deliver(mb!.messageId, { case: "projectsList", value: {} });
    s.deliver(ma!.messageId, { case: "workItemsList", value: { complete: true, asOfRevision: 3n } });
    expect((await a).payload.case).toBe("workItemsList");
    expect((await b).projects).toEqual([]);
    expect(pushes).toHaveLength(1);
    expect(pushes[0]).toMatch(/^srv-/);
    expect(ma!.messageId).toMatch(/^[0-9a-f-]{36}$/);
    expect(c.pendingCount).toBe(0);
  });

  it("rejects with the server's Error, field and current version", async () => {
    const { c } = newClient();
    c.connect();
    net.last.open();
    const p = c.request({ case: "updateWorkItemRequest", value: { workItemId: "x", expectedVersion: 1n } });
    net.last.deliver(net.last.sent[0]!.messageId, {
      case: "error",
      value: { code: "CONFLICT", message: "changed", field: "expected_version", currentVersion: 4n },
    });
    const err = await p.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PmError);
    expect(err).toMatchObject({ code: "CONFLICT", field: "expected_version", currentVersion: 4n });
  });

  it("collects a chunked load until complete", async () => {
    const { c } = newClient();
    c.connect();
    const s = net.last;
    s.open();
    const p = c.call(get, "workItemsList");
    const id = s.sent[0]!.messageId;
    s.deliver(id, { case: "workItemsList", value: { workItems: [item({ id: "1" }), item({ id: "2" })], asOfRevision: 9n } });
    s.deliver(id, { case: "workItemsList", value: { workItems: [item({ id: "3" })], asOfRevision: 9n } });
    s.deliver(id, { case: "workItemsList", value: { workItems: [item({ id: "4" })], asOfRevision: 9n, complete: true } });
    const list = await p;
    expect(list.workItems.map((w) => w.id)).toEqual(["1", "2", "3", "4"]);
    expect(list.asOfRevision).toBe(9n);
    expect(list.complete).toBe(true);
  });

  it("discards the chunks of a load that ends in an Error", async () => {
    const { c } = newClient();
    c.connect();
    const s = net.last;
    s.open();
    const p = c.call(get, "workItemsList");
    const id = s.sent[0]!.messageId;
    s.deliver(id, { case: "workItemsList", value: { workItems: [item({ id: "1" })] } });
    s.deliver(id, { case: "error", value: { code: "INTERNAL", message: "boom" } });
    await expect(p).rejects.toMatchObject({ code: "INTERNAL" });
  });

  it("redoes a load cut off by a disconnect, from the start, with the same message_id", async () => {
    const { c } = newClient();
    c.connect();
    const s1 = net.last;
    s1.open();
    const p = c.call(get, "workItemsList");
    const id = s1.sent[0]!.messageId;
    s1.deliver(id, { case: "workItemsList", value: { workItems: [item({ id: "1" }), item({ id: "2" })] } });
    s1.drop(1001);
    await vi.advanceTimersByTimeAsync(1000);
    const s2 = net.last;
    expect(s2).not.toBe(s1);
    s2.open();
    expect(s2.sent.map((m) => m.messageId)).toEqual([id]);
    s2.deliver(id, { case: "workItemsList", value: { workItems: [item({ id: "1" })] } });
    s2.deliver(id, { case: "workItemsList", value: { workItems: [item({ id: "2" })], complete: true } });
    expect((await p).workItems.map((w) => w.id)).toEqual(["1", "2"]);
  });

  it("times out after 30 s without an answer, and no longer listens to that connection", async () => {
    const { c, pushes } = newClient();
    c.connect();
    const s1 = net.last;
    s1.open();
    const p = c.request(get);
    const caught = p.catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(29_999);
    expect(c.pendingCount).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(await caught).toMatchObject({ code: "TIMEOUT" });
    s1.deliver(s1.sent[0]!.messageId, { case: "workItemsList", value: { complete: true } });
    expect(pushes).toHaveLength(0);
  });

  it("passes on an answer to a request no longer pending as a push", () => {
    const { c, pushes } = newClient();
    c.connect();
    net.last.open();
    net.last.deliver("not-mine", { case: "workItemUpdated", value: {} });
    expect(pushes).toEqual(["not-mine"]);
  });

  it("takes a silent connection for dead after a timeout and makes a new one", async () => {
    const { c, states } = newClient();
    c.connect();
    const s1 = net.last;
    s1.open();
    const a = c.request(get).catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(10_000);
    const b = c.request({ case: "deleteWorkItemRequest", value: { workItemId: "x" } });
    const idB = s1.sent[1]!.messageId;
    await vi.advanceTimersByTimeAsync(20_000);
    expect(await a).toMatchObject({ code: "TIMEOUT" });
    expect(s1.closedByClient).toBeDefined();
    expect(states.at(-1)).toBe("reconnecting");
    await vi.advanceTimersByTimeAsync(1_000);
    const s2 = net.last;
    expect(s2).not.toBe(s1);
    s2.open();
    expect(s2.sent.map((m) => m.messageId)).toEqual([idB]); // the other request goes again
    s2.deliver(idB, { case: "workItemDeleted", value: { workItemId: "x" } });
    await b;
  });

  it("keeps requests made while disconnected and sends each once when connected", async () => {
    const { c } = newClient();
    c.connect();
    const a = c.request(get, { messageId: "edit-1" });
    const b = c.request(get, { messageId: "edit-2" });
    expect(c.pendingCount).toBe(2);
    await vi.advanceTimersByTimeAsync(60_000); // no timeout while queued
    expect(c.pendingCount).toBe(2);
    const s = net.last;
    s.open();
    expect(s.sent.map((m) => m.messageId)).toEqual(["edit-1", "edit-2"]);
    s.deliver("edit-1", { case: "workItemsList", value: { complete: true } });
    s.deliver("edit-2", { case: "workItemsList", value: { complete: true } });
    await Promise.all([a, b]);
    expect(s.sent).toHaveLength(2);
  });

  it("sends a request lost with its connection again, with the same message_id, exactly once", async () => {
    const { c } = newClient();
    c.connect();
    const s1 = net.last;
    s1.open();
    const p = c.request({ case: "updateWorkItemRequest", value: { workItemId: "x", expectedVersion: 1n, title: "t" } });
    const id = s1.sent[0]!.messageId;
    s1.drop(1006);
    await vi.advanceTimersByTimeAsync(250);
    net.last.open();
    net.last.drop(4000);
    await vi.advanceTimersByTimeAsync(500);
    const s3 = net.last;
    s3.open();
    const all = net.sockets.flatMap((s) => s.sent.map((m) => m.messageId));
    expect(all).toEqual([id, id, id]); // once per connection, never twice on one
    s3.deliver(id, { case: "workItemUpdated", value: {} });
    await p;
    expect(c.pendingCount).toBe(0);
  });

  it("fails a request lost with its connection when it must not be re-sent", async () => {
    const { c } = newClient();
    c.connect();
    net.last.open();
    const p = c.request(get, { resend: false });
    net.last.drop(1001);
    await expect(p).rejects.toMatchObject({ code: "CONNECTION_LOST" });
  });

  it("reconnects with exponential backoff and jitter, and says offline after a few failures", async () => {
    const random = vi.fn(() => 1); // the top of each jitter range
    const { c, states } = newClient({ random, backoff: { minMs: 100, maxMs: 1000 }, offlineAfter: 2 });
    c.connect();
    net.last.open();
    net.last.drop(1001);
    expect(states.at(-1)).toBe("reconnecting");
    const times: number[] = [];
    let t = 0;
    for (let i = 0; i < 5; i++) {
      const before = net.sockets.length;
      while (net.sockets.length === before) {
        await vi.advanceTimersByTimeAsync(10);
        t += 10;
      }
      times.push(t);
      t = 0;
      net.last.drop(1006); // refused again
    }
    expect(times).toEqual([100, 200, 400, 800, 1000]);
    expect(states).toContain("offline");
    expect(c.state).toBe("offline");
    await vi.advanceTimersByTimeAsync(1000);
    net.last.open();
    expect(c.state).toBe("live");
    expect(c.epoch).toBe(2);
  });

  it("reconnects after 4000 (slow consumer) and 1001 (shutdown)", async () => {
    const { c } = newClient();
    c.connect();
    net.last.open();
    net.last.drop(4000);
    await vi.advanceTimersByTimeAsync(300);
    net.last.open();
    net.last.drop(1001);
    await vi.advanceTimersByTimeAsync(300);
    net.last.open();
    expect(net.sockets).toHaveLength(3);
    expect(c.state).toBe("live");
  });

  it("stops on 4500 (token expired) until a new token, keeping the same user's queued requests", async () => {
    const { c, problems } = newClient();
    c.connect();
    net.last.open();
    const p = c.request({ case: "updateWorkItemRequest", value: { workItemId: "x", title: "mine" } }, { messageId: "e1" });
    net.last.drop(4500, "token expired");
    expect(c.state).toBe("offline");
    expect(problems).toEqual([{ kind: "token-expired", code: 4500, message: expect.any(String) }]);
    await vi.advanceTimersByTimeAsync(120_000);
    expect(net.sockets).toHaveLength(1); // no reconnect with the dead token
    const q = c.request(get, { messageId: "r1" }); // queued meanwhile
    c.setToken(token({ exp: 4102444801 }));
    expect(net.sockets).toHaveLength(2);
    expect(net.last.url).toContain(encodeURIComponent(token({ exp: 4102444801 })));
    net.last.open();
    expect(net.last.sent.map((m) => m.messageId)).toEqual(["e1", "r1"]);
    net.last.deliver("e1", { case: "workItemUpdated", value: {} });
    net.last.deliver("r1", { case: "workItemsList", value: { complete: true } });
    await Promise.all([p, q]);
  });

  it("keeps one connection when a new token comes while a retry is scheduled", async () => {
    const { c } = newClient();
    c.connect();
    net.last.drop(1006); // retry scheduled
    c.setToken(token({ exp: 4102444802 }));
    expect(net.sockets).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(net.sockets).toHaveLength(2);
    net.last.open();
    expect(c.state).toBe("live");
  });

  it("drops queued requests when another user signs in", async () => {
    const { c } = newClient();
    c.connect();
    net.last.drop(4500);
    const p = c.request(get);
    c.setToken(token({ sub: "u-2" }));
    await expect(p).rejects.toMatchObject({ code: "CLOSED" });
    net.last.open();
    expect(net.last.sent).toHaveLength(0);
  });

  it("does not dial with an expired token", () => {
    const { c, problems } = newClient({ token: token({ exp: 1000 }) });
    c.connect();
    expect(net.sockets).toHaveLength(0);
    expect(c.state).toBe("offline");
    expect(problems[0]?.kind).toBe("token-expired");
  });

  it("reports 1008 and 1009, and reconnects (after a pause for 1008)", async () => {
    const { c, problems } = newClient();
    c.connect();
    net.last.open();
    net.last.drop(1009);
    expect(problems.map((p) => p.kind)).toEqual(["frame-too-large"]);
    await vi.advanceTimersByTimeAsync(300);
    net.last.open();
    net.last.drop(1008);
    expect(problems.map((p) => p.kind)).toEqual(["frame-too-large", "policy"]);
    await vi.advanceTimersByTimeAsync(4_999);
    expect(net.sockets).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(1);
    expect(net.sockets).toHaveLength(3);
  });

  it("stops on other 45xx codes until told to try again", async () => {
    const { c, problems } = newClient();
    c.connect();
    net.last.open();
    net.last.drop(4501, "access revoked");
    await vi.advanceTimersByTimeAsync(60_000);
    expect(net.sockets).toHaveLength(1);
    expect(problems[0]).toMatchObject({ kind: "refused", message: "access revoked" });
    c.reconnectNow();
    expect(net.sockets).toHaveLength(2);
  });

  it("retries RATE_LIMITED and UNAVAILABLE with the same message_id after retry_after_ms", async () => {
    const { c } = newClient({ random: () => 0 });
    c.connect();
    const s = net.last;
    s.open();
    const p = c.request({ case: "deleteWorkItemRequest", value: { workItemId: "x" } });
    const id = s.sent[0]!.messageId;
    s.deliver(id, { case: "error", value: { code: "RATE_LIMITED", message: "slow down", retryAfterMs: 200n } });
    await vi.advanceTimersByTimeAsync(199);
    expect(s.sent).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(s.sent.map((m) => m.messageId)).toEqual([id, id]);
    s.deliver(id, { case: "error", value: { code: "UNAVAILABLE", message: "busy", retryAfterMs: 100n } });
    await vi.advanceTimersByTimeAsync(200);
    expect(s.sent).toHaveLength(3);
    s.deliver(id, { case: "workItemDeleted", value: { workItemId: "x" } });
    expect((await p).payload.case).toBe("workItemDeleted");
  });

  it("refuses a request over the frame limit without sending it", async () => {
    const { c } = newClient();
    c.connect();
    net.last.open();
    const big = "x".repeat(300 * 1024);
    await expect(c.request({ case: "createWorkItemRequest", value: { title: "t", description: big } })).rejects.toMatchObject({
      code: "FRAME_TOO_LARGE",
    });
    expect(net.last.sent).toHaveLength(0);
  });

  it("rejects everything on close and refuses new requests", async () => {
    const { c } = newClient();
    c.connect();
    net.last.open();
    const p = c.request(get);
    const q = c.request(get, { resend: false });
    c.close();
    await expect(p).rejects.toMatchObject({ code: "CLOSED" });
    await expect(q).rejects.toMatchObject({ code: expect.stringMatching(/CLOSED|CONNECTION_LOST/) });
    await expect(c.request(get)).rejects.toMatchObject({ code: "CLOSED" });
    expect(net.last.closedByClient?.code).toBe(1000);
    expect(c.state).toBe("offline");
  });
});
