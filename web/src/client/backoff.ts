/** Backoff is a reconnect policy: exponential delays from minMs to maxMs. */
export interface Backoff {
  /** The first delay. Default 250 ms. */
  minMs?: number;
  /** The cap. Default 10 s. */
  maxMs?: number;
}

/**
 * backoffDelay returns the wait before retry number attempt (0 for the
 * first): min·2^attempt capped at max, drawn at random from its upper half
 * ("equal jitter"), so that the clients of a stopped node spread their
 * reconnects.
 */
export function backoffDelay(attempt: number, b: Backoff = {}, random: () => number = Math.random): number {
  const min = b.minMs ?? 250;
  const max = Math.max(b.maxMs ?? 10_000, min);
  const d = Math.min(min * 2 ** Math.min(attempt, 30), max);
  return Math.round(d / 2 + random() * (d / 2));
}
