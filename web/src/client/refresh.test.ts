import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { PmError } from "./errors";
import { FakeNet, FakeNode, token } from "./fakes";
import { refreshDelayMs } from "./jwt";
import { ProjectManagementWebSocketClient, type Problem } from "./socket";
import { endpointTokenSource, type TokenReason, type TokenSource } from "./tokens";

const NOW = Date.UTC(2030, 0, 1);
const sec = (ms: number) => Math.floor(ms / 1000);

let net: FakeNet;
let node: FakeNode;

beforeEach(() => {
  vi.useFakeTimers({ now: NOW });
  net = new FakeNet();
  node = new FakeNode();
  net.onSocket = (s) => node.serve(s);
});
afterEach(() => {
  vi.useRealTimers();
});

/** Asks records each ask of a token source; the test answers them. */
class Asks implements TokenSource {
  readonly asks: { reason: TokenReason; lastError?: PmError; resolve: (t: string) => void; reject: (e: unknown) => void }[] = [];
  maxLeadMs?: number;
  next(reason: TokenReason, lastError?: PmError): Promise<string> {
    return new Promise((resolve, reject) => this.asks.push({ reason, lastError, resolve, reject }));
  }
  get last() {
    const a = this.asks.at(-1);
    if (!a) throw new Error("not asked");
    return a;
  }
}

function newClient(source: TokenSource, lifetimeMs = 100_000) {
  const c = new ProjectManagementWebSocketClient({
    url: "ws://board.test/ws",
    token: token({ exp: sec(NOW + lifetimeMs) }),
    tokenSource: source,
    createSocket: net.create,
    random: () => 0.5,
  });
  const problems: Problem[] = [];
  const tokens: string[] = [];
  c.onProblem((p) => problems.push(p));
  c.onToken((t) => tokens.push(t));
  c.connect();
  net.last.open();
  return { c, problems, tokens };
}

describe("refreshDelayMs", () => {
  it("waits 70–80% of the remaining lifetime, at random", () => {
    expect(refreshDelayMs(100_000, () => 0)).toBe(80_000);
    expect(refreshDelayMs(100_000, () => 1)).toBe(70_000);
    expect(refreshDelayMs(100_000, () => 0.5)).toBe(75_000);
  });
  it("gives at most maxLeadMs of notice", () => {
    expect(refreshDelayMs(3_600_000, () => 0.5, 300_000)).toBe(3_300_000);
    expect(refreshDelayMs(60_000, () => 0.5, 300_000)).toBe(45_000); // a short token: its own share
  });
  it("is 0 for an expired token", () => {
    expect(refreshDelayMs(0)).toBe(0);
    expect(refreshDelayMs(-5_000)).toBe(0);
  });
});

describe("token refresh", () => {
  it("asks the source ahead of expiry and refreshes in band on the same connection", async () => {
    const src = new Asks();
    const { c, tokens } = newClient(src);
    await vi.advanceTimersByTimeAsync(74_999);
    expect(src.asks).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(1);
    expect(src.last.reason).toBe("refresh");
    const fresh = token({ exp: sec(NOW + 3_700_000) });
    src.last.resolve(fresh);
    await vi.advanceTimersByTimeAsync(0);
    expect(net.last.sentOf("refreshTokenRequest").map((m) => m.payload.value)).toMatchObject([{ token: fresh }]);
    expect(node.refreshed).toEqual([fresh]);
    expect(tokens).toEqual([fresh]);
    expect(c.claims.exp).toBe(sec(NOW + 3_700_000));
    expect(net.sockets).toHaveLength(1);
    expect(c.epoch).toBe(1);
    // The next ask is scheduled from the new expiry (75% of what is left then).
    await vi.advanceTimersByTimeAsync((3_700_000 - 75_000) * 0.75 - 1_000);
    expect(src.asks).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(2_000);
    expect(src.asks).toHaveLength(2);
  });

  it("keeps the old token when the node refuses the new one, and asks again with the reason", async () => {
    const src = new Asks();
    const old = token({ exp: sec(NOW + 100_000) });
    const { c, tokens } = newClient(src);
    node.refuseRefresh = "the token's signature does not verify";
    await vi.advanceTimersByTimeAsync(75_000);
    src.last.resolve(token({ exp: sec(NOW + 3_700_000) }));
    await vi.advanceTimersByTimeAsync(0);
    expect(tokens).toEqual([]);
    expect(c.claims.exp).toBe(sec(NOW + 100_000));
    expect(src.asks).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(250); // backoff
    expect(src.asks).toHaveLength(2);
    expect(src.last.lastError).toMatchObject({ code: "UNAUTHORIZED", field: "token", message: "the token's signature does not verify" });
    node.refuseRefresh = "";
    const good = token({ exp: sec(NOW + 3_700_000) });
    src.last.resolve(good);
    await vi.advanceTimersByTimeAsync(0);
    expect(tokens).toEqual([good]);
    expect(net.last.url).toContain(encodeURIComponent(old)); // never reconnected
    expect(net.sockets).toHaveLength(1);
  });

  it("retries a failing source with backoff, passing its error on", async () => {
    const src = new Asks();
    newClient(src);
    await vi.advanceTimersByTimeAsync(75_000);
    src.last.reject(new PmError("UNAVAILABLE", "The sign-in service answered HTTP 503."));
    await vi.advanceTimersByTimeAsync(250);
    expect(src.asks.map((a) => a.reason)).toEqual(["refresh", "refresh"]);
    expect(src.last.lastError?.message).toBe("The sign-in service answered HTTP 503.");
  });

  it("refuses another user's token, or an expired one, without sending it", async () => {
    const { c } = newClient(new Asks());
    await expect(c.refreshToken(token({ sub: "u-2" }))).rejects.toMatchObject({ code: "UNAUTHORIZED", field: "token" });
    await expect(c.refreshToken(token({ exp: sec(NOW - 60_000) }))).rejects.toMatchObject({ code: "UNAUTHORIZED", field: "token" });
    await expect(c.refreshToken("garbage")).rejects.toMatchObject({ code: "VALIDATION_ERROR", field: "token" });
    expect(net.last.sentOf("refreshTokenRequest")).toHaveLength(0);
  });

  it("keeps a token given while disconnected for the next connection", async () => {
    const { c } = newClient(new Asks());
    net.last.drop(1006);
    const fresh = token({ exp: sec(NOW + 3_700_000) });
    await c.refreshToken(fresh);
    await vi.advanceTimersByTimeAsync(300);
    expect(net.sockets).toHaveLength(2);
    expect(net.last.url).toContain(encodeURIComponent(fresh));
    expect(net.sockets[0]!.sentOf("refreshTokenRequest")).toHaveLength(0);
  });

  it("after 4500 asks the source for a token and reconnects with it, resending what was queued", async () => {
    const src = new Asks();
    const { c, problems } = newClient(src);
    const p = c.request({ case: "listProjectsRequest", value: {} }, { messageId: "q1" });
    net.last.drop(4500, "token expired");
    expect(src.last.reason).toBe("expired");
    expect(c.state).toBe("offline");
    const fresh = token({ exp: sec(NOW + 3_700_000) });
    src.last.resolve(fresh);
    await vi.advanceTimersByTimeAsync(0);
    expect(net.sockets).toHaveLength(2);
    expect(net.last.url).toContain(encodeURIComponent(fresh));
    net.last.open();
    await expect(p).resolves.toMatchObject({ messageId: "q1" });
    expect(problems).toEqual([]);
  });

  it("after 4500 stops with token-expired when the source has no token", async () => {
    const src = new Asks();
    const { c, problems } = newClient(src);
    net.last.drop(4500, "token expired");
    src.last.reject(new PmError("UNAVAILABLE", "The sign-in service could not be reached."));
    await vi.advanceTimersByTimeAsync(60_000);
    expect(problems).toEqual([{ kind: "token-expired", code: 4500, message: expect.stringContaining("could not be reached") }]);
    expect(net.sockets).toHaveLength(1);
    expect(c.state).toBe("offline");
  });

  it("ignores the answer to an ask overtaken by expiry", async () => {
    const src = new Asks();
    newClient(src);
    await vi.advanceTimersByTimeAsync(75_000);
    const stale = src.last;
    net.last.drop(4500);
    expect(src.last.reason).toBe("expired");
    stale.resolve(token({ exp: sec(NOW + 3_700_000) }));
    await vi.advanceTimersByTimeAsync(0);
    expect(net.sockets).toHaveLength(1); // nothing came of the stale answer
    expect(node.refreshed).toEqual([]);
  });

  it("stops asking once closed", async () => {
    const src = new Asks();
    const { c } = newClient(src);
    c.close();
    await vi.advanceTimersByTimeAsync(200_000);
    expect(src.asks).toHaveLength(0);
  });
});

describe("endpointTokenSource", () => {
  const respond = (status: number, body: unknown) => vi.fn(() => Promise.resolve(new Response(JSON.stringify(body), { status })));

  it("fetches with the browser's credentials and reads token or access_token", async () => {
    const f = respond(200, { token: "t1" });
    await expect(endpointTokenSource("https://id.test/token", f).next("refresh")).resolves.toBe("t1");
    expect(f).toHaveBeenCalledWith("https://id.test/token", expect.objectContaining({ credentials: "include", cache: "no-store" }));
    await expect(endpointTokenSource("/t", respond(200, { access_token: "t2" })).next("refresh")).resolves.toBe("t2");
  });

  it("rejects with UNAVAILABLE and a reason for every other answer", async () => {
    const cases: [typeof fetch, string][] = [
      [respond(401, { error: "login_required" }), "HTTP 401"],
      [respond(200, { nothing: 1 }), "without a token"],
      [vi.fn(() => Promise.resolve(new Response("<html>", { status: 200 }))), "JSON"],
      [vi.fn(() => Promise.reject(new TypeError("network"))), "could not be reached"],
    ];
    for (const [f, msg] of cases) {
      await expect(endpointTokenSource("/t", f).next("refresh")).rejects.toMatchObject({ code: "UNAVAILABLE", message: expect.stringContaining(msg) });
    }
  });
});
