import { describe, expect, it } from "vitest";
import { FIRST_KEY, MAX_KEY_LENGTH, generateKeyBetween, invalidKey } from "./position";
// Made by the Go position package (random inserts and one hammered spot):
// [a, b, Between(a, b)], "" meaning the start or the end.
import vectors from "./testdata/position-vectors.json";

const orNull = (k: string) => (k === "" ? null : k);

describe("generateKeyBetween", () => {
  it("matches the Go position package", () => {
    for (const [a, b, want] of vectors as [string, string, string][]) {
      expect(generateKeyBetween(orNull(a), orNull(b)), `between(${a}, ${b})`).toBe(want);
    }
  });

  it("matches rocicorp/fractional-indexing's examples", () => {
    const cases: [string | null, string | null, string][] = [
      [null, null, "a0"],
      [null, "a0", "Zz"],
      [null, "Zz", "Zy"],
      ["a0", null, "a1"],
      ["a1", null, "a2"],
      ["a0", "a1", "a0V"],
      ["a1", "a2", "a1V"],
      ["a0V", "a1", "a0l"],
      ["Zz", "a0", "ZzV"],
      ["Zz", "a1", "a0"],
      [null, "Y00", "Xzzz"],
      ["bzz", null, "c000"],
      ["a0", "a0V", "a0G"],
      ["a0", "a0G", "a08"],
      ["b125", "b129", "b127"],
      ["a0", "a1V", "a1"],
      ["Zz", "a01", "a0"],
      [null, "a0V", "a0"],
      [null, "b999", "b99"],
    ];
    for (const [a, b, want] of cases) expect(generateKeyBetween(a, b)).toBe(want);
  });

  it("refuses keys out of order or malformed", () => {
    expect(() => generateKeyBetween("a1", "a0")).toThrow();
    expect(() => generateKeyBetween("a1", "a1")).toThrow();
    expect(() => generateKeyBetween("a10", null)).toThrow(); // trailing 0
    expect(() => generateKeyBetween("a", null)).toThrow(); // integer too short
    expect(() => generateKeyBetween("0", null)).toThrow(); // bad head
    expect(() => generateKeyBetween("a0-", null)).toThrow();
  });

  it("keeps 1,000 moves to the same spot valid, ordered and short", () => {
    for (const side of ["up", "down", "alternate"] as const) {
      let lo = generateKeyBetween(null, null);
      let hi = generateKeyBetween(lo, null);
      for (let i = 0; i < 1000; i++) {
        const k = generateKeyBetween(lo, hi);
        expect(k > lo && k < hi).toBe(true);
        expect(invalidKey(k)).toBeUndefined();
        expect(k.length).toBeLessThanOrEqual(MAX_KEY_LENGTH);
        if (side === "up" || (side === "alternate" && i % 2 === 0)) hi = k;
        else lo = k;
      }
    }
  });

  it("keeps 1,000 moves to the top or the bottom away from A and z", () => {
    let top = FIRST_KEY;
    let bottom = FIRST_KEY;
    for (let i = 0; i < 1000; i++) {
      top = generateKeyBetween(null, top);
      bottom = generateKeyBetween(bottom, null);
      for (const k of [top, bottom]) {
        expect(k[0]).not.toBe("A");
        expect(k[0]).not.toBe("z");
        expect(invalidKey(k)).toBeUndefined();
      }
    }
  });

  it("refuses to make keys the server would refuse", () => {
    expect(invalidKey("A" + "0".repeat(25) + "1")).toBeDefined();
    expect(invalidKey("z" + "0".repeat(26))).toBeDefined();
    expect(invalidKey("a0" + "V".repeat(300))).toBeDefined();
    expect(() => generateKeyBetween("y" + "z".repeat(25), null)).toThrow(/no room/);
    expect(() => generateKeyBetween(null, "B" + "0".repeat(25))).toThrow(/no room/);
  });
});
