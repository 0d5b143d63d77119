// @vitest-environment happy-dom
import { render } from "preact";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { PmError } from "../client";
import { token } from "../client/fakes";
import { RenewBanner } from "./renew";
import { tick } from "./testkit";

let root: HTMLElement;
beforeEach(() => {
  root = document.createElement("div");
  document.body.append(root);
});
afterEach(() => {
  render(null, root);
  root.remove();
});

const future = () => Math.floor(Date.now() / 1000) + 3600;
const banner = () => root.querySelector<HTMLElement>('[data-testid="renew-banner"]')!;
const input = () => root.querySelector<HTMLInputElement>("#renew-token")!;
const button = () => root.querySelector<HTMLButtonElement>('button[type="submit"]')!;

async function paste(value: string) {
  input().value = value;
  input().dispatchEvent(new Event("input", { bubbles: true }));
  await tick();
  button().click();
  await tick();
}

describe("RenewBanner", () => {
  it("says when the session ends and hands over a token of the same user", async () => {
    const got: string[] = [];
    render(<RenewBanner expiresAt={Math.floor(Date.now() / 1000) + 240} expectSub="u-1" onToken={(t) => got.push(t)} />, root);
    expect(banner().textContent).toContain("Your session ends in 4 min");
    expect(button().disabled).toBe(true);
    const t = token({ exp: future() });
    await paste(`  ${t}\n`);
    expect(got).toEqual([t]);
    expect(input().value).toBe("");
  });

  it("refuses another user's, an expired or an unreadable token in place", async () => {
    const got: string[] = [];
    render(<RenewBanner expiresAt={future()} expectSub="u-1" onToken={(t) => got.push(t)} />, root);
    for (const [t, msg] of [
      [token({ sub: "u-2", exp: future() }), "another user's"],
      [token({ exp: 1000 }), "has expired"],
      ["not a token", "not a JWT"],
    ] as const) {
      await paste(t);
      expect(root.querySelector('[role="alert"]')?.textContent).toContain(msg);
      expect(input().getAttribute("aria-invalid")).toBe("true");
    }
    expect(got).toEqual([]);
  });

  it("shows why the server refused the last token", () => {
    render(
      <RenewBanner expiresAt={future()} expectSub="u-1" error={new PmError("UNAUTHORIZED", "the token's signature does not verify", "token")} onToken={() => undefined} />,
      root,
    );
    expect(root.querySelector('[role="alert"]')?.textContent).toBe("The server refused the last token: the token's signature does not verify");
  });
});
