// The board in a real browser against a real cluster: two pm-node processes
// behind HAProxy, started by e2e/browser_test.go, which passes what it seeded
// in PM_BROWSER_SEED. Run through `go test ./e2e -run TestBrowserBoard`.
//
// Three people, each in a browser context of their own: Alice (admin) opens
// the board through HAProxy, Bob (editor) on the node Alice is not on, Carol
// (viewer) through HAProxy. Every step asserts what a person sees, and takes
// a screenshot into the artifacts folder.
import assert from "node:assert/strict";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

import { chromium } from "playwright-core";

const seed = JSON.parse(process.env.PM_BROWSER_SEED ?? "{}");
// A change must reach the other pages live: pushed, not on a reload or a
// poll (the board polls nothing). The bound is far above the figures seen
// (tens of ms) so that a loaded CI machine does not fail it; how fast
// changes travel is measured by pm-loadgen (docs/performance.md), not here.
const LIVE_MS = 5000;

let browser;
const pages = {}; // alice, bob, carol
let aliceNode = 0; // 1-based index of the node under Alice's page

/** boardURL opens the board signed in as a person, on a project. */
function boardURL(base, who) {
  return `${base}/#token=${encodeURIComponent(seed.people[who].token)}&project=${seed.project}`;
}

/** shot saves a screenshot once the page's animations have finished. */
async function shot(page, name, { fullPage = true } = {}) {
  await page.evaluate(() => Promise.all(document.getAnimations().map((a) => a.finished.catch(() => {}))));
  await page.screenshot({ path: join(seed.artifacts, `${name}.png`), fullPage });
}

async function control(method, path) {
  const resp = await fetch(seed.control + path, { method });
  const text = await resp.text();
  assert.equal(resp.status, 200, `${method} ${path}: ${text}`);
  return text.trim();
}

async function connections(node) {
  return Number(await control("GET", `/nodes/${node}/connections`));
}

/** open starts a person's page at url and waits until the board is live. */
async function open(who, url) {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
  const page = await context.newPage();
  page.errors = [];
  page.on("pageerror", (e) => page.errors.push(String(e)));
  page.on("console", (m) => {
    if (m.type() === "error") page.errors.push(m.text());
  });
  await page.goto(url);
  await page.getByTestId("board").waitFor();
  await live(page);
  return page;
}

function live(page) {
  return page.locator('[data-testid="connection-status"][data-state="live"]').waitFor({ timeout: 15000 });
}

function card(page, title) {
  return page.locator('[data-testid="card"]', { has: page.locator(".card-title", { hasText: title }) });
}

/** seen waits for a card to show on a page and returns how long it took. */
async function seen(page, title, since, { column } = {}) {
  const scope = column ? page.getByTestId(`column-${column}`) : page;
  await scope.locator('[data-testid="card"] .card-title', { hasText: title }).first().waitFor({ timeout: 5000 });
  return Date.now() - since;
}

/** createItem makes an item through the new-item dialog and returns when Save was clicked. */
async function createItem(page, title, fields = {}) {
  await page.getByTestId("new-item").click();
  const dialog = page.getByTestId("item-dialog");
  await dialog.waitFor();
  await dialog.getByLabel("Title").fill(title);
  if (fields.status) await dialog.getByLabel("Status").selectOption({ label: fields.status });
  if (fields.type) await dialog.getByLabel("Type").selectOption({ label: fields.type });
  if (fields.parent) await dialog.getByLabel("Parent").selectOption({ label: fields.parent });
  const saved = Date.now();
  await dialog.getByTestId("save-item").click();
  await dialog.waitFor({ state: "detached" });
  return saved;
}

async function openItem(page, title) {
  await card(page, title).first().click();
  const dialog = page.getByTestId("item-dialog");
  await dialog.waitFor();
  return dialog;
}

before(async () => {
  assert.ok(seed.board, "PM_BROWSER_SEED is not set: run through go test ./e2e -run TestBrowserBoard");
  browser = await chromium.launch({
    executablePath: seed.chromium,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
    // Playwright gives the browser a fresh, throwaway user-data-dir of its own.
  });
});

after(async () => {
  await browser?.close();
});

describe("the board, live, for a team", () => {
  test("Alice signs in through HAProxy; Bob on the other node; Carol as a viewer", async () => {
    pages.alice = await open("alice", boardURL(seed.board, "alice"));
    // Which node did HAProxy give Alice? Bob goes to the other one.
    const [n1, n2] = [await connections(1), await connections(2)];
    aliceNode = n1 > 0 ? 1 : 2;
    assert.equal(n1 + n2, 1, `connections per node: ${n1}, ${n2}`);
    const bobNode = aliceNode === 1 ? 2 : 1;
    pages.bob = await open("bob", boardURL(seed.nodes[bobNode - 1], "bob"));
    pages.carol = await open("carol", boardURL(seed.board, "carol"));

    const a = pages.alice;
    assert.equal(await a.getByTestId("user-name").innerText(), "Alice Adams");
    assert.match(await a.getByTestId("user-tenant").innerText(), new RegExp(seed.tenant));
    // The token does not stay in the address bar.
    assert.ok(!a.url().includes("token="), `token still in the URL: ${a.url()}`);
    await shot(a, "01-alice-empty-board");
  });

  test("a card Bob creates shows on Alice's and Carol's boards within a second", async () => {
    const t0 = await createItem(pages.bob, "Write the launch checklist", { status: "To do" });
    const ms = await seen(pages.alice, "Write the launch checklist", t0, { column: "todo" });
    await seen(pages.carol, "Write the launch checklist", t0, { column: "todo" });
    assert.ok(ms < LIVE_MS, `Alice saw Bob's card after ${ms} ms`);
    // The changed card is marked for a moment.
    await card(pages.alice, "Write the launch checklist").and(pages.alice.locator(".flash")).waitFor({ timeout: 2000 });
    await shot(pages.alice, "02-alice-sees-bobs-card");
  });

  test("Alice drags a card to another column; Bob sees it move", async () => {
    const a = pages.alice;
    await createItem(a, "Book the venue", { status: "To do" });
    await seen(pages.bob, "Book the venue", Date.now());
    const t0 = Date.now();
    await card(a, "Book the venue").dragTo(a.getByTestId("column-in_progress"));
    await seen(a, "Book the venue", t0, { column: "in_progress" });
    const ms = await seen(pages.bob, "Book the venue", t0, { column: "in_progress" });
    assert.ok(ms < LIVE_MS, `Bob saw the move after ${ms} ms`);
    await shot(pages.bob, "03-bob-sees-the-move");
  });

  test("a card moves between two others, and by keyboard", async () => {
    const a = pages.alice;
    for (const t of ["First", "Second", "Third"]) await createItem(a, t, { status: "Review" });
    const col = a.getByTestId("column-review");
    await col.locator(".card-title", { hasText: "Third" }).waitFor();
    // Drag "Third" onto "Second": it lands between First and Second.
    await card(a, "Third").dragTo(card(a, "Second"));
    await a.waitForFunction(() => {
      const titles = [...document.querySelectorAll('[data-testid="column-review"] .card-title')].map((e) => e.textContent);
      return titles.join(",") === "First,Third,Second";
    }, null, { timeout: 5000 });
    await pages.bob.waitForFunction(() => {
      const titles = [...document.querySelectorAll('[data-testid="column-review"] .card-title')].map((e) => e.textContent);
      return titles.join(",") === "First,Third,Second";
    }, null, { timeout: 5000 });
    // Keyboard: pick "First" up with M, move it down one, drop with Enter.
    await card(a, "First").focus();
    await a.keyboard.press("m");
    await a.keyboard.press("ArrowDown");
    await a.keyboard.press("Enter");
    await pages.bob.waitForFunction(() => {
      const titles = [...document.querySelectorAll('[data-testid="column-review"] .card-title')].map((e) => e.textContent);
      return titles[0] === "Third";
    }, null, { timeout: 5000 });
    await shot(a, "04-moves");
  });

  test("an edit by Bob shows on Alice's board", async () => {
    const dialog = await openItem(pages.bob, "Write the launch checklist");
    await dialog.getByLabel("Title").fill("Write the launch checklist v2");
    const t0 = Date.now();
    await dialog.getByTestId("save-item").click();
    const ms = await seen(pages.alice, "Write the launch checklist v2", t0);
    assert.ok(ms < LIVE_MS, `Alice saw Bob's edit after ${ms} ms`);
  });

  for (const choice of ["keep mine", "take theirs"]) {
    test(`a conflicting save is shown, and resolved: ${choice}`, async () => {
      const title = `Conflict ${choice}`;
      await createItem(pages.alice, title, { status: "Backlog" });
      await seen(pages.bob, title, Date.now());
      // Both are retitling the card; Bob saves first, then Alice.
      const mine = await openItem(pages.alice, title);
      await mine.getByLabel("Title").fill(`${title}: Alice's`);
      const theirs = await openItem(pages.bob, title);
      await theirs.getByLabel("Title").fill(`${title}: Bob's`);
      await theirs.getByTestId("save-item").click();
      await theirs.waitFor({ state: "detached" });
      await seen(pages.alice, `${title}: Bob's`, Date.now()); // Bob's title is on her board
      await mine.getByTestId("save-item").click();
      const conflict = pages.alice.getByTestId("conflict-dialog");
      await conflict.waitFor({ timeout: 5000 });
      assert.match(await conflict.getByTestId("conflict-theirs-title").innerText(), /Bob's/);
      assert.match(await conflict.getByTestId("conflict-mine-title").innerText(), /Alice's/);
      // It says who, by name.
      await conflict.getByText(seed.people.bob.name).waitFor({ timeout: 5000 });
      await shot(pages.alice, `05-conflict-${choice.replace(" ", "-")}`);
      const want = choice === "keep mine" ? `${title}: Alice's` : `${title}: Bob's`;
      await conflict.getByTestId(choice === "keep mine" ? "conflict-keep-mine" : "conflict-take-theirs").click();
      await conflict.waitFor({ state: "detached" });
      await seen(pages.alice, want, Date.now());
      await seen(pages.bob, want, Date.now());
    });
  }

  test("delete: blocked while the item has children, then gone for everyone", async () => {
    const a = pages.alice;
    await createItem(a, "Launch epic", { type: "Epic" });
    await createItem(a, "Launch story", { type: "Story", parent: "Epic: Launch epic" });
    let dialog = await openItem(a, "Launch epic");
    await dialog.getByTestId("delete-item").click();
    await dialog.getByTestId("confirm-delete").click();
    await dialog.getByTestId("delete-error").waitFor();
    assert.match(await dialog.getByTestId("delete-error").innerText(), /\b1 (live )?child\b/);
    await shot(a, "06-delete-blocked");
    await dialog.getByRole("button", { name: "Close" }).first().click().catch(() => a.keyboard.press("Escape"));
    dialog = await openItem(a, "Launch story");
    await dialog.getByTestId("delete-item").click();
    const t0 = Date.now();
    await dialog.getByTestId("confirm-delete").click();
    await card(pages.bob, "Launch story").waitFor({ state: "detached", timeout: 5000 });
    const ms = Date.now() - t0;
    assert.ok(ms < LIVE_MS, `the card left Bob's board after ${ms} ms`);
  });

  test("a viewer sees no editing controls", async () => {
    const c = pages.carol;
    assert.equal(await c.getByTestId("new-item").count(), 0, "Carol has a new-item button");
    const first = card(c, "Book the venue");
    assert.equal(await first.getAttribute("draggable"), "false");
    await first.click();
    const dialog = c.getByTestId("item-dialog");
    await dialog.waitFor();
    assert.equal(await dialog.getByTestId("save-item").count(), 0, "Carol can save");
    assert.equal(await dialog.getByTestId("delete-item").count(), 0, "Carol can delete");
    await shot(c, "07-viewer");
    await c.keyboard.press("Escape");
  });

  test("the list view filters; members and activity show people by name", async () => {
    const a = pages.alice;
    await a.getByTestId("view-list").click();
    await a.getByTestId("list-view").waitFor();
    await a.getByTestId("filter-text").fill("Launch");
    await a.waitForFunction(() => {
      const rows = [...document.querySelectorAll('[data-testid="tree-row"]')].map((e) => e.textContent ?? "");
      return rows.some((r) => r.includes("Launch epic")) && !rows.some((r) => r.includes("Book the venue"));
    }, null, { timeout: 5000 });
    await shot(a, "10-list-filtered");
    await a.getByTestId("filter-text").fill("");
    await a.getByTestId("view-board").click();
    await a.getByTestId("board").waitFor();

    await a.getByTestId("open-members").click();
    const members = a.getByTestId("members-panel");
    await members.waitFor();
    for (const who of ["alice", "bob", "carol"]) {
      await members.locator(`[data-testid="member"][data-user="${seed.people[who].id}"]`, { hasText: seed.people[who].name }).waitFor();
    }
    await shot(a, "11-members");
    await a.keyboard.press("Escape");
    await members.waitFor({ state: "detached" });

    await a.getByTestId("open-activity").click();
    const activity = a.getByTestId("activity-list");
    await activity.waitFor();
    await activity.getByText(seed.people.bob.name).first().waitFor();
    await shot(a, "12-activity");
    await a.keyboard.press("Escape");
  });

  test("the dashboard lists Alice's projects with counts, and makes a new one", async () => {
    const a = pages.alice;
    await a.getByRole("link", { name: "Projects", exact: true }).click();
    await a.getByTestId("dashboard").waitFor();
    const apollo = a.locator(`[data-testid="project-card"][data-id="${seed.project}"]`);
    await apollo.waitFor();
    const reviewCount = Number(await apollo.getByTestId("count-review").innerText());
    assert.equal(reviewCount, 3, "review column count on the dashboard");
    const form = a.getByTestId("new-project-form");
    await form.getByRole("textbox").fill("Gemini");
    await form.getByRole("button").click();
    await a.waitForURL(/project=/);
    await a.getByTestId("board").waitFor();
    await a.getByRole("link", { name: "Projects", exact: true }).click();
    await a.locator('[data-testid="project-card"]', { hasText: "Gemini" }).waitFor();
    await shot(a, "13-dashboard");
    await apollo.click();
    await a.getByTestId("board").waitFor();
    await live(a);
  });

  test("a board of 2,000 cards opens in one go (time reported)", async () => {
    const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    const page = await context.newPage();
    const url = `${seed.board}/#token=${encodeURIComponent(seed.people.alice.token)}&project=${seed.big}`;
    const t0 = Date.now();
    await page.goto(url);
    await page.waitForFunction(() => document.querySelectorAll('[data-testid="card"]').length === 2000, null, { timeout: 30000 });
    const ms = Date.now() - t0;
    console.log(`2,000 cards on screen ${ms} ms after navigation started (board through HAProxy, cold page)`);
    for (const col of ["backlog", "todo", "in_progress", "review", "done"]) {
      assert.equal(await page.getByTestId(`column-${col}`).locator('[data-testid="card"]').count(), 400, col);
    }
    await shot(page, "14-big-board", { fullPage: false });
    await context.close();
  });

  test("the node under Alice dies: she reconnects through HAProxy, sees Bob's changes, and her edit lands once", async () => {
    const a = pages.alice;
    // Alice has a new card half typed when her node dies; she saves it
    // during the outage (the client queues it, or re-sends it once back).
    await a.getByTestId("new-item").click();
    const dialog = a.getByTestId("item-dialog");
    await dialog.getByLabel("Title").fill("Saved by Alice during the outage");
    await control("POST", `/nodes/${aliceNode}/kill`);
    await dialog.getByTestId("save-item").click();
    const stateAtSave = await a.getByTestId("connection-status").getAttribute("data-state");
    console.log(`Alice's connection when she saved: ${stateAtSave}`);
    await a.locator('[data-testid="connection-status"]:not([data-state="live"])').waitFor({ timeout: 10000 }).catch(() => {});
    await shot(a, "08-alice-reconnecting");
    // Meanwhile Bob (on the other node) adds a card.
    await createItem(pages.bob, "Made while Alice was away", { status: "Backlog" });
    await live(a);
    await seen(a, "Made while Alice was away", Date.now());
    await seen(pages.bob, "Saved by Alice during the outage", Date.now());
    // Exactly once, on both boards, and once more after a reload from the server.
    for (const p of [a, pages.bob]) {
      assert.equal(await card(p, "Saved by Alice during the outage").count(), 1);
    }
    await pages.bob.reload();
    await pages.bob.getByTestId("board").waitFor();
    await seen(pages.bob, "Saved by Alice during the outage", Date.now());
    assert.equal(await card(pages.bob, "Saved by Alice during the outage").count(), 1);
    await shot(a, "09-alice-back");
    // The node comes back for the rest of the suite.
    await control("POST", `/nodes/${aliceNode}/restart`);
  });

  test("an expired token asks to sign in again, and the board carries on with a new one", async () => {
    const short = await control("GET", "/tokens/dora?ttl=4s");
    const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    const page = await context.newPage();
    await page.goto(`${seed.board}/#token=${encodeURIComponent(short)}&project=${seed.project}`);
    await page.getByTestId("board").waitFor();
    await live(page);
    // At expiry the node closes with 4500: the board asks for a token instead of reconnecting.
    const form = page.getByTestId("signin-form");
    await form.waitFor({ timeout: 15000 });
    await shot(page, "15-token-expired");
    await form.getByRole("textbox").fill(await control("GET", "/tokens/dora?ttl=1h"));
    await form.getByRole("button", { name: /sign in/i }).click();
    await form.waitFor({ state: "detached" });
    await live(page);
    await createItem(page, "Made by Dora after signing in again", { status: "Backlog" });
    await seen(pages.bob, "Made by Dora after signing in again", Date.now());
    await context.close();
  });

  test("a token about to expire is renewed from a banner, in band: the board stays open on its connection", async () => {
    const short = await control("GET", "/tokens/dora?ttl=20s");
    const exp = JSON.parse(Buffer.from(short.split(".")[1], "base64url").toString()).exp;
    const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    const page = await context.newPage();
    const sockets = [];
    page.on("websocket", (ws) => sockets.push(ws.url()));
    await page.goto(`${seed.board}/#token=${encodeURIComponent(short)}&project=${seed.project}`);
    await page.getByTestId("board").waitFor();
    await live(page);
    // A little before expiry the board asks for a new token, and stays usable meanwhile.
    const banner = page.getByTestId("renew-banner");
    await banner.waitFor({ timeout: 20000 });
    assert.match(await banner.textContent(), /Your session ends in \d+ s/);
    await createItem(page, "Made by Dora while asked to renew", { status: "Backlog" });
    await shot(page, "16-renew-banner", { fullPage: false });
    await banner.getByLabel("New access token").fill(await control("GET", "/tokens/dora?ttl=1h"));
    await banner.getByRole("button", { name: "Renew session" }).click();
    await banner.waitFor({ state: "detached" });
    // Past the first token's expiry (the node would have closed with 4500): still
    // live, on the same single connection, and changes still go both ways.
    await page.waitForFunction((ms) => Date.now() > ms, exp * 1000 + 2000, { timeout: 30000, polling: 250 });
    await live(page);
    assert.equal(await page.getByTestId("signin-form").count(), 0);
    await createItem(page, "Made by Dora after renewing in band", { status: "Backlog" });
    await seen(pages.bob, "Made by Dora after renewing in band", Date.now());
    await createItem(pages.bob, "Bob's card for Dora's renewed board", { status: "Backlog" });
    await seen(page, "Bob's card for Dora's renewed board", Date.now());
    assert.equal(sockets.length, 1, `the page opened ${sockets.length} WebSockets: ${sockets.join(", ")}`);
    await shot(page, "17-renewed");
    await context.close();
  });

  test("with a token endpoint the board signs in from it and refreshes silently, in band", async () => {
    const { url, endpoint } = seed.tokenBoard;
    const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    const sockets = [];
    page.on("websocket", (ws) => sockets.push(ws.url()));
    const handedOut = []; // exp of each token the endpoint gave the page
    page.on("response", (r) => {
      if (r.url() === endpoint && r.status() === 200) {
        r.json().then((b) => handedOut.push(JSON.parse(Buffer.from(b.token.split(".")[1], "base64url").toString()).exp), () => {});
      }
    });
    // Not signed in at the identity service: the endpoint says 401, and the board shows its form.
    await page.goto(`${url}/#project=${seed.project}`);
    await page.getByTestId("signin-form").waitFor();
    assert.equal(sockets.length, 0);
    // Signed in there (its session cookie): the board takes its token from the endpoint.
    await context.addCookies([{ name: "pm_session", value: seed.people.dora.id, url: endpoint }]);
    await page.reload();
    await page.getByTestId("board").waitFor();
    await live(page);
    // Past the first token's expiry, after a silent refresh: the same single
    // connection, no banner, no dialog, and changes go both ways.
    const deadline = Date.now() + 40000;
    while (handedOut.length < 2) {
      assert.ok(Date.now() < deadline, `the endpoint handed out ${handedOut.length} token(s)`);
      await sleep(250); // polling what the page fetched
    }
    await page.waitForFunction((ms) => Date.now() > ms, handedOut[0] * 1000 + 2000, { timeout: 30000, polling: 250 });
    await live(page);
    assert.equal(await page.getByTestId("renew-banner").count(), 0);
    assert.equal(await page.getByTestId("signin-form").count(), 0);
    await createItem(page, "Made by Dora on a silently refreshed board", { status: "Backlog" });
    await seen(pages.bob, "Made by Dora on a silently refreshed board", Date.now());
    assert.equal(sockets.length, 1, `the page opened ${sockets.length} WebSockets: ${sockets.join(", ")}`);
    await shot(page, "18-token-endpoint", { fullPage: false });
    assert.deepEqual(errors, []);
    await context.close();
  });

  test("no page logged an error", () => {
    for (const [who, p] of Object.entries(pages)) {
      const bad = p.errors.filter((e) => !/WebSocket|ERR_CONNECTION_REFUSED|net::/.test(e));
      assert.deepEqual(bad, [], `${who}'s page logged errors`);
    }
  });
});
