// Fractional-index keys for card order: strings ordered byte-wise such that a
// key can always be made between any two others. The algorithm and format are
// those of rocicorp/fractional-indexing (base 62), the same as the Go
// `position` package, so keys made here and by the server interleave.

const DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const SMALLEST_INTEGER = "A" + "0".repeat(26);

/** The longest key the server accepts, in bytes (docs/protocol.md, Limits). */
export const MAX_KEY_LENGTH = 256;

/** The key of the first card of an empty column. */
export const FIRST_KEY = "a0";

/**
 * invalidKey returns why key is not a position the server accepts from a
 * client, or undefined when it is one: well formed, at most MAX_KEY_LENGTH
 * bytes, and not in the outermost integer ranges (first character A or z).
 */
export function invalidKey(key: string): string | undefined {
  if (key.length > MAX_KEY_LENGTH) return `longer than ${MAX_KEY_LENGTH} bytes`;
  if (key[0] === "A" || key[0] === "z") return "in the outermost integer range";
  return malformed(key);
}

/** Returns why key is not a well-formed key, or undefined. */
function malformed(key: string): string | undefined {
  if (key === "") return "empty key";
  if (key === SMALLEST_INTEGER) return "the smallest integer";
  for (const ch of key) {
    if (!DIGITS.includes(ch)) return `invalid character ${JSON.stringify(ch)}`;
  }
  if (!/^[A-Za-z]/.test(key)) return "invalid head";
  const n = integerLength(key[0]!);
  if (key.length < n) return "integer part too short";
  if (key.slice(n).endsWith("0")) return "fractional part ends in 0";
  return undefined;
}

/**
 * generateKeyBetween returns a key strictly between a and b; null stands for
 * the start (as a) or the end (as b) of the column. It throws when a is not
 * below b, when either is malformed, or when no key the server accepts fits
 * between them (which no real sequence of moves reaches).
 */
export function generateKeyBetween(a: string | null, b: string | null): string {
  for (const k of [a, b]) {
    const why = k === null ? undefined : malformed(k);
    if (why) throw new Error(`position: invalid key ${JSON.stringify(k)}: ${why}`);
  }
  if (a !== null && b !== null && a >= b) {
    throw new Error(`position: ${JSON.stringify(a)} is not below ${JSON.stringify(b)}`);
  }
  const key = between(a, b);
  if (invalidKey(key)) throw new Error("position: no room for a key here");
  return key;
}

function between(a: string | null, b: string | null): string {
  if (a === null && b === null) return FIRST_KEY;
  if (a === null) {
    const ib = integerPart(b!);
    const fb = b!.slice(ib.length);
    if (ib === SMALLEST_INTEGER) return ib + midpoint("", fb);
    if (ib < b!) return ib;
    const res = decrementInteger(ib);
    if (res === null) throw new Error("position: cannot decrement any more");
    return res === SMALLEST_INTEGER ? res + midpoint("", null) : res;
  }
  if (b === null) {
    const ia = integerPart(a);
    const fa = a.slice(ia.length);
    const i = incrementInteger(ia);
    return i ?? ia + midpoint(fa, null);
  }
  const ia = integerPart(a);
  const fa = a.slice(ia.length);
  const ib = integerPart(b);
  const fb = b.slice(ib.length);
  if (ia === ib) return ia + midpoint(fa, fb);
  const i = incrementInteger(ia);
  if (i === null) throw new Error("position: cannot increment any more");
  return i < b ? i : ia + midpoint(fa, null);
}

/** A fractional part strictly between a and b (null: no upper bound). */
function midpoint(a: string, b: string | null): string {
  if (b !== null) {
    let n = 0;
    while (n < b.length && (a[n] ?? "0") === b[n]) n++;
    if (n > 0) return b.slice(0, n) + midpoint(a.slice(n), b.slice(n));
  }
  const da = a ? DIGITS.indexOf(a[0]!) : 0;
  const db = b ? DIGITS.indexOf(b[0]!) : DIGITS.length;
  if (db - da > 1) return DIGITS[Math.floor((da + db + 1) / 2)]!;
  if (b && b.length > 1) return b.slice(0, 1);
  return DIGITS[da]! + midpoint(a.slice(1), null);
}

/** The length of the integer part a key's head starts: a..z 2..27, Z..A 2..27. */
function integerLength(head: string): number {
  if (head >= "a" && head <= "z") return head.charCodeAt(0) - 97 + 2;
  if (head >= "A" && head <= "Z") return 90 - head.charCodeAt(0) + 2;
  throw new Error(`position: invalid head ${JSON.stringify(head)}`);
}

function integerPart(key: string): string {
  return key.slice(0, integerLength(key[0]!));
}

function incrementInteger(x: string): string | null {
  const head = x[0]!;
  const digs = x.slice(1).split("");
  let carry = true;
  for (let i = digs.length - 1; carry && i >= 0; i--) {
    const d = DIGITS.indexOf(digs[i]!) + 1;
    if (d === DIGITS.length) {
      digs[i] = "0";
    } else {
      digs[i] = DIGITS[d]!;
      carry = false;
    }
  }
  if (!carry) return head + digs.join("");
  if (head === "Z") return "a0";
  if (head === "z") return null;
  const h = String.fromCharCode(head.charCodeAt(0) + 1);
  if (h > "a") digs.push("0");
  else digs.pop();
  return h + digs.join("");
}

function decrementInteger(x: string): string | null {
  const head = x[0]!;
  const digs = x.slice(1).split("");
  let borrow = true;
  for (let i = digs.length - 1; borrow && i >= 0; i--) {
    const d = DIGITS.indexOf(digs[i]!) - 1;
    if (d === -1) {
      digs[i] = DIGITS[DIGITS.length - 1]!;
    } else {
      digs[i] = DIGITS[d]!;
      borrow = false;
    }
  }
  if (!borrow) return head + digs.join("");
  if (head === "a") return "Z" + DIGITS[DIGITS.length - 1]!;
  if (head === "A") return null;
  const h = String.fromCharCode(head.charCodeAt(0) - 1);
  if (h < "Z") digs.push(DIGITS[DIGITS.length - 1]!);
  else digs.pop();
  return h + digs.join("");
}
