import type { WorkItem } from "../gen/pm/v1/messages_pb";
import { generateKeyBetween } from "./position";

/**
 * positionAt returns the position for a card dropped at index among the
 * other cards of a column (column as shown, the moving card left out), so
 * that it lands between its new neighbours. Neighbours with equal keys (two
 * people dropped at one spot at once) are stepped over: the card goes after
 * them. It throws only when no key fits, which no real board reaches.
 */
export function positionAt(column: readonly WorkItem[], movingId: string, index: number): string {
  const others = column.filter((w) => w.id !== movingId);
  const i = Math.max(0, Math.min(index, others.length));
  const before = others[i - 1]?.position || null;
  let j = i;
  while (before !== null && j < others.length && others[j]!.position <= before) j++;
  const after = others[j]?.position || null;
  try {
    return generateKeyBetween(before, after);
  } catch {
    // A malformed neighbour key: place the card after the last valid one.
    return generateKeyBetween(lastValid(others.slice(0, i)), null);
  }
}

function lastValid(items: readonly WorkItem[]): string | null {
  for (let k = items.length - 1; k >= 0; k--) {
    try {
      generateKeyBetween(items[k]!.position, null);
      return items[k]!.position;
    } catch {
      // keep looking
    }
  }
  return null;
}
