import { describe, expect, it } from "vitest";
import { item } from "./fakes";
import { positionAt } from "./moves";
import { byPosition } from "./replica";

const col = (...keys: string[]) => keys.map((k, i) => item({ id: `c${i}`, position: k }));

describe("positionAt", () => {
  it("places a card between its new neighbours", () => {
    const c = col("a0", "a1", "a2");
    expect(positionAt(c, "x", 0) < "a0").toBe(true);
    const mid = positionAt(c, "x", 1);
    expect(mid > "a0" && mid < "a1").toBe(true);
    expect(positionAt(c, "x", 3) > "a2").toBe(true);
    expect(positionAt([], "x", 0)).toBe("a0");
  });

  it("leaves the moving card out of its neighbours", () => {
    const c = col("a0", "a1", "a2");
    const k = positionAt(c, "c1", 2); // c1 moves below c2
    expect(k > "a2").toBe(true);
  });

  it("steps over neighbours with equal keys", () => {
    const c = col("a0", "a1", "a1", "a2");
    const k = positionAt(c, "x", 2);
    expect(k > "a1" && k < "a2").toBe(true);
  });

  it("keeps 1,000 drops at one spot in order", () => {
    let c = col("a0", "a1");
    for (let n = 0; n < 1000; n++) {
      const k = positionAt(c, `n${n}`, 1);
      c = [...c, item({ id: `n${n}`, position: k })].sort(byPosition);
      expect(c[1]!.id).toBe(`n${n}`);
      expect(k.length).toBeLessThanOrEqual(256);
    }
  });
});
