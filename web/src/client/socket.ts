import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import {
  WebSocketMessageSchema,
  WorkItemsListSchema,
  type WebSocketMessage,
  type WorkItem,
} from "../gen/pm/v1/messages_pb";
import { backoffDelay, type Backoff } from "./backoff";
import { PmError } from "./errors";
import { decodeClaims, expired, refreshDelayMs, type Claims } from "./jwt";
import type { TokenReason, TokenSource } from "./tokens";

/**
 * ConnectionState is what the board shows in its connection indicator:
 * - connecting: the first connection is being made;
 * - live: connected, events flow;
 * - reconnecting: the connection dropped, a new one is on its way;
 * - offline: not connected for a while (still retrying), or stopped until
 *   something changes (the token expired, the client was closed).
 */
export type ConnectionState = "connecting" | "live" | "reconnecting" | "offline";

/**
 * Problem is something the person should hear about: the token expired
 * (sign in again), the server refused the connection for good, or the
 * client broke a limit (a protocol close code, see docs/protocol.md).
 */
export interface Problem {
  kind: "token-expired" | "refused" | "policy" | "frame-too-large";
  /** The close code, or 0 when the client found it out itself. */
  code: number;
  message: string;
}

/** The subset of the browser's WebSocket the client uses (tests pass a fake). */
export interface WebSocketLike {
  binaryType: string;
  onopen: ((ev: unknown) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
}

export interface ClientOptions {
  /** The node's WebSocket endpoint, e.g. wss://board.example/ws (without the token). */
  url: string;
  /** The access token (JWT); sent as the access_token query parameter. */
  token: string;
  /**
   * Where new tokens come from. With one, the client asks it ahead of the
   * token's expiry and hands the new token to the node in band
   * (RefreshTokenRequest), so the connection outlives its first token; and
   * when the node closed the connection for expiry (4500) it asks again and
   * reconnects. Without one, expiry stops the client (Problem
   * "token-expired") until setToken.
   */
  tokenSource?: TokenSource;
  /** Makes the socket; default: the browser's WebSocket. */
  createSocket?: (url: string) => WebSocketLike;
  /** How long a sent request waits for its answer. Default 30 s. */
  requestTimeoutMs?: number;
  /** Reconnect delays. Default 250 ms doubling to 10 s, with jitter. */
  backoff?: Backoff;
  /** Failed attempts in a row after which the state says offline (retries go on). Default 3. */
  offlineAfter?: number;
  /** How often a RATE_LIMITED or UNAVAILABLE answer is retried with the same message_id. Default 5. */
  busyRetries?: number;
  /** Largest frame the client sends (the node closes with 1009 beyond it). Default 256 KiB. */
  maxFrameBytes?: number;
  random?: () => number;
  now?: () => number;
}

/** A request payload: the oneof of WebSocketMessage, as an init object. */
export type PayloadInit = NonNullable<MessageInitShape<typeof WebSocketMessageSchema>["payload"]>;
type Payload = WebSocketMessage["payload"];
/** The payload cases of answers. */
export type AnswerCase = NonNullable<Payload["case"]>;
/** The value of the payload case C. */
export type AnswerOf<C extends AnswerCase> = Extract<Payload, { case: C }>["value"];

export interface RequestOptions {
  /** The message_id; default a fresh UUID. Give the old one to retry a request safely. */
  messageId?: string;
  /**
   * Whether to send the request again, with the same message_id, on the next
   * connection when the connection drops before the answer. Default true (the
   * node's idempotency makes that safe); false rejects with CONNECTION_LOST.
   */
  resend?: boolean;
  timeoutMs?: number;
}

interface Pending {
  id: string;
  frame: Uint8Array;
  resend: boolean;
  timeoutMs: number;
  /** Sent on the current connection and waiting for the answer. */
  sent: boolean;
  timer: ReturnType<typeof setTimeout> | undefined;
  busy: number;
  /** WorkItemsList chunks received so far. */
  chunks: WorkItem[];
  resolve: (m: WebSocketMessage) => void;
  reject: (e: PmError) => void;
}

type Listener<T> = (v: T) => void;

/** The normal close code, which the client uses when it closes on purpose. */
const NORMAL = 1000;
/** The pause after a 1008 (policy) close before reconnecting. */
const POLICY_PAUSE_MS = 5_000;

/**
 * ProjectManagementWebSocketClient keeps one WebSocket to a node: it
 * correlates requests with their answers by message_id, collects chunked
 * WorkItemsList answers, reconnects with backoff when the connection drops,
 * and queues requests while disconnected (sending them, with their original
 * message_id, once connected). Messages that answer none of its pending
 * requests (events, ResyncRequired, SubscriptionRevoked) go to onPush.
 */
export class ProjectManagementWebSocketClient {
  private readonly opts: Required<Omit<ClientOptions, "token" | "createSocket" | "backoff" | "tokenSource">> & {
    backoff: Backoff;
  };
  private readonly createSocket: (url: string) => WebSocketLike;
  private tokenValue: string;
  private claimsValue: Claims;
  private readonly tokenSource: TokenSource | undefined;
  /** The next ask of the token source. */
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  /** Counts asks of the token source; an answer to an older one is ignored. */
  private asks = 0;
  /** Failed refreshes in a row. */
  private refreshFailures = 0;
  private ws: WebSocketLike | undefined;
  private wsOpen = false;
  private stateValue: ConnectionState = "offline";
  private stopped = true;
  /** close() was called: requests are refused until connect(). */
  private closed = false;
  private attempt = 0;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private retryAt = 0;
  private epochValue = 0;
  /** Requests by message_id, in the order they were made. */
  private readonly pending = new Map<string, Pending>();

  private readonly stateListeners = new Set<Listener<ConnectionState>>();
  private readonly pushListeners = new Set<Listener<WebSocketMessage>>();
  private readonly connectedListeners = new Set<Listener<number>>();
  private readonly problemListeners = new Set<Listener<Problem>>();
  private readonly tokenListeners = new Set<Listener<string>>();
  private readonly queueListeners = new Set<Listener<number>>();

  constructor(options: ClientOptions) {
    this.opts = {
      url: options.url,
      requestTimeoutMs: options.requestTimeoutMs ?? 30_000,
      backoff: options.backoff ?? {},
      offlineAfter: options.offlineAfter ?? 3,
      busyRetries: options.busyRetries ?? 5,
      maxFrameBytes: options.maxFrameBytes ?? 256 * 1024,
      random: options.random ?? Math.random,
      now: options.now ?? Date.now,
    };
    this.createSocket =
      options.createSocket ?? ((url) => new WebSocket(url) as unknown as WebSocketLike);
    this.tokenValue = options.token;
    this.claimsValue = decodeClaims(options.token);
    this.tokenSource = options.tokenSource;
  }

  /** The connection state now. */
  get state(): ConnectionState {
    return this.stateValue;
  }

  /** The signed-in user's claims. */
  get claims(): Claims {
    return this.claimsValue;
  }

  /** Counts the connections made: 1 for the first, one more per reconnect. */
  get epoch(): number {
    return this.epochValue;
  }

  /** Unix ms of the next reconnect attempt, or 0 when none is scheduled. */
  get nextRetryAt(): number {
    return this.retryAt;
  }

  /** Requests that wait for a connection or an answer (queued edits included). */
  get pendingCount(): number {
    return this.pending.size;
  }

  onState(fn: Listener<ConnectionState>): () => void {
    return listen(this.stateListeners, fn);
  }
  /** Messages the node pushed: events, ResyncRequired, SubscriptionRevoked. */
  onPush(fn: Listener<WebSocketMessage>): () => void {
    return listen(this.pushListeners, fn);
  }
  /** Called with the epoch each time a connection opens, after queued requests went out. */
  onConnected(fn: Listener<number>): () => void {
    return listen(this.connectedListeners, fn);
  }
  onProblem(fn: Listener<Problem>): () => void {
    return listen(this.problemListeners, fn);
  }
  /** Called with the new token whenever the client adopts one (refresh or setToken). */
  onToken(fn: Listener<string>): () => void {
    return listen(this.tokenListeners, fn);
  }
  /** Called with pendingCount whenever it changes. */
  onPendingCount(fn: Listener<number>): () => void {
    return listen(this.queueListeners, fn);
  }

  /** connect starts connecting (and reconnecting) until close(). */
  connect(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.closed = false;
    this.attempt = 0;
    this.setState(this.epochValue === 0 ? "connecting" : "reconnecting");
    this.dial();
  }

  /**
   * reconnectNow skips the wait before the next attempt (e.g. the browser
   * went online), or tries again after the server refused the connection.
   */
  reconnectNow(): void {
    if (this.closed || this.ws) return;
    this.stopped = false;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.dial();
  }

  /**
   * setToken replaces the access token (after it expired) and connects with
   * it. Queued requests are kept when the token is the same user's in the
   * same tenant, and rejected with CLOSED otherwise. Throws when the token
   * cannot be read.
   */
  setToken(token: string): void {
    const claims = decodeClaims(token);
    const sameUser = claims.sub === this.claimsValue.sub && claims.tenantId === this.claimsValue.tenantId;
    this.adopt(token, claims);
    if (!sameUser) this.rejectAll(new PmError("CLOSED", "another user signed in"));
    this.hangUp();
    this.stopped = true;
    this.connect();
  }

  /**
   * refreshToken hands a new token of the same user in the same tenant to
   * the node in band (RefreshTokenRequest), so that the connection lives on
   * past the old token's expiry: no reconnect, no resync, requests in flight
   * carry on. While disconnected, the token is kept for the next connection.
   * It rejects with a PmError (field "token"), keeping the old token, when
   * the token cannot be read, is another user's or has expired, or when the
   * node refuses it (UNAUTHORIZED); and with CONNECTION_LOST when the
   * connection drops first.
   */
  async refreshToken(token: string): Promise<void> {
    let claims: Claims;
    try {
      claims = decodeClaims(token);
    } catch (err) {
      throw new PmError("VALIDATION_ERROR", err instanceof Error ? err.message : String(err), "token");
    }
    if (claims.sub !== this.claimsValue.sub || claims.tenantId !== this.claimsValue.tenantId) {
      throw new PmError("UNAUTHORIZED", "This token is another user's.", "token");
    }
    if (expired(claims, this.opts.now())) throw new PmError("UNAUTHORIZED", "This token has expired.", "token");
    if (this.wsOpen) {
      const answer = await this.call({ case: "refreshTokenRequest", value: { token } }, "tokenRefreshed", { resend: false });
      // The node's word on the expiry (the claims' exp, unless it differs).
      if (answer.expiresAt > 0n) claims = { ...claims, exp: Math.floor(Number(answer.expiresAt) / 1000) };
    }
    this.adopt(token, claims);
    this.refreshFailures = 0;
    this.scheduleRefresh();
  }

  private adopt(token: string, claims: Claims): void {
    const changed = token !== this.tokenValue;
    this.tokenValue = token;
    this.claimsValue = claims;
    if (changed) for (const fn of this.tokenListeners) fn(token);
  }

  /** scheduleRefresh arms the next ask of the token source, from the token's expiry. */
  private scheduleRefresh(): void {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
    const src = this.tokenSource;
    if (!src || this.stopped || !this.claimsValue.exp) return;
    const remaining = this.claimsValue.exp * 1000 - this.opts.now();
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = undefined;
      void this.renew("refresh");
    }, refreshDelayMs(remaining, this.opts.random, src.maxLeadMs));
  }

  /**
   * renew asks the token source for a token: to refresh in band, or, after
   * expiry, to connect with. A failed refresh is asked again after a
   * backoff (the old token still serves until the node closes with 4500);
   * no token after expiry stops the client with Problem "token-expired".
   */
  private async renew(reason: TokenReason, lastError?: PmError): Promise<void> {
    const src = this.tokenSource;
    if (!src) return;
    const ask = ++this.asks;
    const current = () => ask === this.asks && !this.closed;
    try {
      const token = await src.next(reason, lastError);
      if (!current()) return;
      if (reason === "expired") this.setToken(token);
      else await this.refreshToken(token);
    } catch (err) {
      if (!current()) return;
      const e = err instanceof PmError ? err : new PmError("VALIDATION_ERROR", err instanceof Error ? err.message : String(err), "token");
      if (reason === "expired") {
        this.stopFor({ kind: "token-expired", code: 4500, message: `Your session has expired. ${e.message}` });
        return;
      }
      clearTimeout(this.refreshTimer);
      this.refreshTimer = setTimeout(() => {
        this.refreshTimer = undefined;
        void this.renew("refresh", e);
      }, backoffDelay(this.refreshFailures++, this.opts.backoff, this.opts.random));
    }
  }

  /** tokenExpired handles an expired token: a new one from the source, or a stop until setToken. */
  private tokenExpired(code: number): void {
    if (!this.tokenSource) {
      this.stopFor({ kind: "token-expired", code, message: "Your session has expired. Sign in again." });
      return;
    }
    this.stopped = true;
    this.retryAt = 0;
    clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
    this.setState("offline");
    void this.renew("expired");
  }

  /** close stops the client: the connection closes and every request is rejected with CLOSED. */
  close(): void {
    this.stopped = true;
    this.closed = true;
    this.asks++;
    clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
    this.hangUp();
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.retryAt = 0;
    this.rejectAll(new PmError("CLOSED", "the client was closed"));
    this.setState("offline");
  }

  /**
   * request sends a request and resolves with its answer, or rejects with a
   * PmError: the server's Error answer, TIMEOUT (no answer within the
   * timeout after it was sent), CONNECTION_LOST (resend false), CLOSED, or
   * FRAME_TOO_LARGE. While disconnected the request waits in the queue: the
   * timeout counts from the moment it is sent. A chunked WorkItemsList answer
   * resolves once, with every chunk's items, when the last chunk arrives.
   * RATE_LIMITED and UNAVAILABLE answers are retried after retry_after_ms.
   */
  request(payload: PayloadInit, options: RequestOptions = {}): Promise<WebSocketMessage> {
    const id = options.messageId ?? crypto.randomUUID();
    if (this.pending.has(id)) {
      return Promise.reject(new PmError("INVALID_MESSAGE", `message_id ${id} is already in flight`));
    }
    const msg = create(WebSocketMessageSchema, {
      messageId: id,
      timestamp: BigInt(this.opts.now()),
      payload,
    });
    const frame = toBinary(WebSocketMessageSchema, msg);
    if (frame.length > this.opts.maxFrameBytes) {
      return Promise.reject(
        new PmError("FRAME_TOO_LARGE", `the request is ${frame.length} bytes; the limit is ${this.opts.maxFrameBytes}`),
      );
    }
    if (this.closed) return Promise.reject(new PmError("CLOSED", "the client was closed"));
    return new Promise<WebSocketMessage>((resolve, reject) => {
      const p: Pending = {
        id,
        frame,
        resend: options.resend ?? true,
        timeoutMs: options.timeoutMs ?? this.opts.requestTimeoutMs,
        sent: false,
        timer: undefined,
        busy: 0,
        chunks: [],
        resolve,
        reject,
      };
      this.pending.set(id, p);
      this.pendingChanged();
      if (this.wsOpen) this.send(p);
    });
  }

  /**
   * call sends a request and resolves with the value of the expected answer
   * case (e.g. "subscribeAck"); any other answer rejects with INTERNAL.
   */
  async call<C extends AnswerCase>(payload: PayloadInit, answer: C, options?: RequestOptions): Promise<AnswerOf<C>> {
    const m = await this.request(payload, options);
    if (m.payload.case !== answer) {
      throw new PmError("INTERNAL", `expected ${answer}, got ${m.payload.case ?? "nothing"}`);
    }
    return m.payload.value as AnswerOf<C>;
  }

  // --- connection ---

  private dial(): void {
    // One connection at a time: a dial replaces a scheduled retry and any socket.
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.hangUp();
    if (expired(this.claimsValue, this.opts.now())) {
      this.tokenExpired(0);
      return;
    }
    this.retryAt = 0;
    const sep = this.opts.url.includes("?") ? "&" : "?";
    const ws = this.createSocket(`${this.opts.url}${sep}access_token=${encodeURIComponent(this.tokenValue)}`);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.wsOpen = false;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.wsOpen = true;
      this.attempt = 0;
      this.epochValue++;
      this.setState("live");
      this.scheduleRefresh();
      for (const p of this.pending.values()) if (!p.sent && p.timer === undefined) this.send(p);
      const epoch = this.epochValue;
      for (const fn of this.connectedListeners) fn(epoch);
    };
    ws.onmessage = (ev) => {
      if (this.ws === ws) this.receive(ev.data);
    };
    ws.onclose = (ev) => {
      if (this.ws === ws) this.lost(ev.code, ev.reason);
    };
    ws.onerror = () => {
      // A close event follows; it decides what to do.
    };
  }

  /** hangUp closes the current socket on purpose; its close event is ignored. */
  private hangUp(): void {
    const ws = this.ws;
    if (!ws) return;
    this.ws = undefined;
    this.wsOpen = false;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(NORMAL, "client closed");
    } catch {
      // Already closed.
    }
    this.unsend();
  }

  /** lost handles the end of the connection by the close code (docs/protocol.md). */
  private lost(code: number, reason: string): void {
    const wasOpen = this.wsOpen;
    this.ws = undefined;
    this.wsOpen = false;
    this.unsend();
    if (this.stopped) return;
    if (code === 4500 || (!wasOpen && expired(this.claimsValue, this.opts.now()))) {
      this.tokenExpired(code);
      return;
    }
    if (code >= 4500 && code <= 4999) {
      this.stopFor({ kind: "refused", code, message: reason || `The server closed the connection (${code}).` });
      return;
    }
    let delay = backoffDelay(this.attempt, this.opts.backoff, this.opts.random);
    if (code === 1008) {
      this.report({ kind: "policy", code, message: reason || "The server closed the connection: too many requests." });
      delay = Math.max(delay, POLICY_PAUSE_MS);
    } else if (code === 1009) {
      this.report({ kind: "frame-too-large", code, message: "A message was too large for the server." });
    }
    this.attempt++;
    this.setState(this.attempt > this.opts.offlineAfter ? "offline" : "reconnecting");
    this.retryAt = this.opts.now() + delay;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.dial();
    }, delay);
  }

  /** stopFor stops reconnecting until setToken (or reconnectNow) and reports why. */
  private stopFor(p: Problem): void {
    this.stopped = true;
    this.retryAt = 0;
    clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
    this.setState("offline");
    this.report(p);
  }

  private report(p: Problem): void {
    for (const fn of this.problemListeners) fn(p);
  }

  private setState(s: ConnectionState): void {
    if (s === this.stateValue) return;
    this.stateValue = s;
    for (const fn of this.stateListeners) fn(s);
  }

  // --- requests ---

  private send(p: Pending): void {
    p.sent = true;
    p.chunks = [];
    this.armTimeout(p); // first: an answer may come before send returns (a fake socket)
    this.ws?.send(p.frame);
  }

  private armTimeout(p: Pending): void {
    clearTimeout(p.timer);
    p.timer = setTimeout(() => {
      if (this.pending.get(p.id) !== p) return; // answered meanwhile
      this.settle(p);
      p.reject(new PmError("TIMEOUT", `no answer within ${Math.round(p.timeoutMs / 1000)} s`));
      // A node answers every request within its own request time (10 s), if only
      // with UNAVAILABLE: this silence means the connection is dead without
      // knowing it yet. Make a new one, so that the board does not go stale.
      if (this.wsOpen) {
        this.hangUp();
        this.lost(1006, "no answer");
      }
    }, p.timeoutMs);
  }

  /**
   * unsend handles the loss of the connection for requests sent on it: they
   * go back to the queue (resend), or fail with CONNECTION_LOST.
   */
  private unsend(): void {
    for (const p of [...this.pending.values()]) {
      if (!p.sent) continue;
      clearTimeout(p.timer);
      p.timer = undefined;
      p.sent = false;
      p.chunks = [];
      if (!p.resend) {
        this.settle(p);
        p.reject(new PmError("CONNECTION_LOST", "the connection dropped before the answer"));
      }
    }
  }

  private rejectAll(err: PmError): void {
    for (const p of [...this.pending.values()]) {
      this.settle(p);
      p.reject(err);
    }
  }

  /** settle takes a request out of the table. */
  private settle(p: Pending): void {
    clearTimeout(p.timer);
    p.timer = undefined;
    if (this.pending.get(p.id) === p) {
      this.pending.delete(p.id);
      this.pendingChanged();
    }
  }

  private pendingChanged(): void {
    const n = this.pending.size;
    for (const fn of this.queueListeners) fn(n);
  }

  private receive(data: unknown): void {
    if (!(data instanceof ArrayBuffer)) return; // the node sends binary frames only
    let m: WebSocketMessage;
    try {
      m = fromBinary(WebSocketMessageSchema, new Uint8Array(data));
    } catch {
      return; // not a WebSocketMessage: nothing to do with it
    }
    const p = this.pending.get(m.messageId);
    if (!p || !p.sent) {
      for (const fn of this.pushListeners) fn(m);
      return;
    }
    const payload = m.payload;
    if (payload.case === "workItemsList" && !payload.value.complete) {
      p.chunks.push(...payload.value.workItems);
      this.armTimeout(p); // each chunk shows the answer is still coming
      return;
    }
    if (payload.case === "error") {
      const err = PmError.fromMessage(payload.value);
      if ((err.code === "RATE_LIMITED" || err.code === "UNAVAILABLE") && p.busy < this.opts.busyRetries) {
        // Passing: the same request again, with the same message_id, a little later.
        const delay = Math.max(err.retryAfterMs, 50) * (1 + this.opts.random() / 2) * 2 ** p.busy;
        p.busy++;
        clearTimeout(p.timer);
        p.sent = false;
        p.chunks = [];
        p.timer = setTimeout(() => {
          p.timer = undefined;
          if (this.wsOpen && this.pending.get(p.id) === p) this.send(p);
        }, delay);
        return;
      }
      this.settle(p);
      p.reject(err);
      return;
    }
    this.settle(p);
    if (payload.case === "workItemsList" && p.chunks.length > 0) {
      const whole = create(WorkItemsListSchema, { ...payload.value, workItems: [...p.chunks, ...payload.value.workItems] });
      m = create(WebSocketMessageSchema, { messageId: m.messageId, timestamp: m.timestamp, payload: { case: "workItemsList", value: whole } });
    }
    p.resolve(m);
  }
}

function listen<T>(set: Set<Listener<T>>, fn: Listener<T>): () => void {
  set.add(fn);
  return () => set.delete(fn);
}
