import type { Error as ErrorMessage } from "../gen/pm/v1/messages_pb";

/**
 * Codes of a PmError: the server's Error.code values (docs/protocol.md), and
 * the client's own for requests that got no answer.
 */
export type ErrorCode =
  | "VALIDATION_ERROR"
  | "INVALID_MESSAGE"
  | "UNAUTHORIZED"
  | "NOT_FOUND"
  | "CONFLICT"
  | "DELETE_BLOCKED"
  | "RATE_LIMITED"
  | "UNAVAILABLE"
  | "INTERNAL"
  /** No answer within the request timeout (30 s). */
  | "TIMEOUT"
  /** The connection dropped after the request was sent, and it is not re-sent. */
  | "CONNECTION_LOST"
  /** The client was closed (signed out, or another user signed in). */
  | "CLOSED"
  /** The request is bigger than a frame may be; it was never sent. */
  | "FRAME_TOO_LARGE";

/** PmError is a request's failure: the server's Error answer, or the client's own. */
export class PmError extends Error {
  override readonly name = "PmError";

  constructor(
    readonly code: ErrorCode | (string & {}),
    message: string,
    /** The offending request field, when one is to blame. */
    readonly field = "",
    /** For CONFLICT: the item's current version. */
    readonly currentVersion = 0n,
    /** For RATE_LIMITED and UNAVAILABLE: when to try again. */
    readonly retryAfterMs = 0,
  ) {
    super(message || code);
  }

  static fromMessage(e: ErrorMessage): PmError {
    return new PmError(e.code, e.message, e.field, e.currentVersion, Number(e.retryAfterMs));
  }
}

/** Whether err is a PmError with one of the codes. */
export function isCode(err: unknown, ...codes: ErrorCode[]): err is PmError {
  return err instanceof PmError && (codes as string[]).includes(err.code);
}

/** Whether the server refuses a project for good: no access, or no such project. */
export function isRefusal(err: unknown): boolean {
  return isCode(err, "UNAUTHORIZED", "NOT_FOUND", "VALIDATION_ERROR", "INVALID_MESSAGE");
}

/** A short text for a person: what went wrong, without internals. */
export function describeError(err: unknown): string {
  if (err instanceof PmError) {
    switch (err.code) {
      case "TIMEOUT":
        return "The server did not answer in time.";
      case "CONNECTION_LOST":
        return "The connection dropped before the server answered.";
      case "CLOSED":
        return "Signed out before the server answered.";
      case "UNAUTHORIZED":
        return err.message || "You are not allowed to do that.";
      case "RATE_LIMITED":
        return "Too many changes at once; try again in a moment.";
      case "UNAVAILABLE":
        return "The server is busy; try again in a moment.";
      default:
        return err.message || err.code;
    }
  }
  return err instanceof Error ? err.message : String(err);
}
