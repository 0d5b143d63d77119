// A development server for the board without the Go node: it serves dist/
// with the node's Content-Security-Policy and answers /ws with the in-memory
// FakeNode of src/client/fakes.ts (demo projects, a teammate making changes).
// For looking at the UI and for browser tests; not for production.
//
//   npm run build && node dev/server.mjs [--port 5173] [--items 60] [--quiet]
//
// POST /__dev/close?code=4000 closes every WebSocket with that code (4000
// reconnect, 4500 token expired, 1001 shutdown…) to try the client's handling.
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { dirname, extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : def;
};
const port = Number(arg("port", "5173"));
const itemCount = Number(arg("items", "60"));
const quiet = process.argv.includes("--quiet");

// The node's policy (docs/operations.md, The board).
const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
  "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

// The fake node is TypeScript: bundle it for Node and load it.
const bundled = await esbuild.build({
  absWorkingDir: root,
  entryPoints: ["src/client/fakes.ts"],
  bundle: true,
  format: "esm",
  platform: "node",
  write: false,
  logLevel: "warning",
});
const fakes = await import(`data:text/javascript;base64,${Buffer.from(bundled.outputFiles[0].text).toString("base64")}`);
const { FakeNode, FakeSocket, item, token } = fakes;

const ME = "a11ce000-0000-4000-8000-000000000001";
const TEAM = [
  ["b0b00000-0000-4000-8000-000000000002", "Grace Hopper"],
  ["ca201000-0000-4000-8000-000000000003", "Alan Turing"],
  ["d0d00000-0000-4000-8000-000000000004", "Katherine Johnson"],
];
const node = new FakeNode(ME);
seed();

/** The open WebSockets, for /__dev/close. */
const sockets = new Set();

const server = createServer(async (req, res) => {
  const url = new URL(req.url ?? "/", "http://x");
  if (req.method === "POST" && url.pathname === "/__dev/close") {
    const code = Number(url.searchParams.get("code") ?? "1001");
    for (const s of sockets) s.end(frame(0x8, Buffer.from([code >> 8, code & 255])));
    res.writeHead(204).end();
    return;
  }
  let path = url.pathname === "/" ? "/index.html" : normalize(url.pathname);
  if (path.includes("..")) path = "/index.html";
  try {
    const body = await readFile(join(root, "dist", path));
    const type = { ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css" }[extname(path)] ?? "application/octet-stream";
    res.writeHead(200, { "content-type": type, "content-security-policy": CSP, "cache-control": "no-store" });
    res.end(body);
  } catch {
    res.writeHead(404).end("not found");
  }
});

server.on("upgrade", (req, sock) => {
  const url = new URL(req.url ?? "/", "http://x");
  if (url.pathname !== "/ws" || !url.searchParams.get("access_token")) {
    sock.end("HTTP/1.1 401 Unauthorized\r\n\r\n");
    return;
  }
  const accept = createHash("sha1").update(`${req.headers["sec-websocket-key"]}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64");
  sock.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
  const fake = new FakeSocket(req.url);
  node.serve(fake);
  fake.isOpen = true;
  fake.onmessage = ({ data }) => sock.write(frame(0x2, Buffer.from(data)));
  let buf = Buffer.alloc(0);
  sock.on("data", (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      const f = parse(buf);
      if (!f) break;
      buf = buf.subarray(f.length);
      if (f.opcode === 0x2) fake.send(new Uint8Array(f.payload));
      else if (f.opcode === 0x9) sock.write(frame(0xa, f.payload));
      else if (f.opcode === 0x8) {
        sock.end(frame(0x8, f.payload.subarray(0, 2)));
        fake.isOpen = false;
      }
    }
  });
  sockets.add(sock);
  sock.on("close", () => {
    fake.isOpen = false;
    sockets.delete(sock);
  });
  sock.on("error", () => (fake.isOpen = false));
});

function frame(opcode, payload) {
  const n = payload.length;
  const head = n < 126 ? Buffer.from([0x80 | opcode, n]) : n < 65536 ? Buffer.from([0x80 | opcode, 126, n >> 8, n & 255]) : Buffer.concat([Buffer.from([0x80 | opcode, 127]), u64(n)]);
  return Buffer.concat([head, payload]);
}
function u64(n) {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
}
function parse(b) {
  if (b.length < 2) return undefined;
  const opcode = b[0] & 0x0f;
  const masked = (b[1] & 0x80) !== 0;
  let len = b[1] & 0x7f;
  let off = 2;
  if (len === 126) {
    if (b.length < 4) return undefined;
    len = b.readUInt16BE(2);
    off = 4;
  } else if (len === 127) {
    if (b.length < 10) return undefined;
    len = Number(b.readBigUInt64BE(2));
    off = 10;
  }
  const maskAt = off;
  if (masked) off += 4;
  if (b.length < off + len) return undefined;
  const payload = Buffer.from(b.subarray(off, off + len));
  if (masked) for (let i = 0; i < len; i++) payload[i] ^= b[maskAt + (i % 4)];
  return { opcode, payload, length: off + len };
}

function seed() {
  const P1 = "de300000-0000-4000-8000-000000000001";
  const P2 = "de300000-0000-4000-8000-000000000002";
  const words = ["Checkout", "Search", "Onboarding", "Billing", "Profile", "Reports", "Notifications", "Sign-in", "Dashboard", "Export"];
  const verbs = ["Design", "Build", "Test", "Polish", "Document", "Refactor", "Measure", "Fix", "Review", "Ship"];
  let seedN = 7; // mulberry32: the same demo every start
  const rnd = (n) => {
    seedN = (seedN + 0x6d2b79f5) | 0;
    let t = Math.imul(seedN ^ (seedN >>> 15), 1 | seedN);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
  };
  const items = [];
  let pos = 0;
  const key = () => `a${(pos++).toString(36).padStart(2, "0")}`.replace(/^a(..)$/, "b$1");
  const epics = Math.max(1, Math.ceil(itemCount / 19)); // 19 items per epic: 3 stories of 5 tasks
  for (let e = 0; e < epics && items.length < itemCount; e++) {
    const epic = `e0000000-0000-4000-8000-${String(e).padStart(12, "0")}`;
    items.push(item({ id: epic, parentId: P1, itemType: 2, title: `${words[e % 10]} ${e >= 10 ? e : ""}`.trim(), status: 1 + rnd(5), priority: 1 + rnd(4), position: key() }));
    for (let s = 0; s < 3 && items.length < itemCount; s++) {
      const story = `5e000000-0000-4000-8000-${String(e * 10 + s).padStart(12, "0")}`;
      items.push(item({ id: story, parentId: epic, itemType: 3, title: `As a user I can use ${words[(e + s) % 10].toLowerCase()} ${["faster", "on mobile", "offline"][s]}`, status: 1 + rnd(5), priority: 1 + rnd(4), storyPoints: [1, 2, 3, 5, 8][rnd(5)], assigneeId: TEAM[rnd(3)][0], position: key() }));
      for (let t = 0; t < 5 && items.length < itemCount; t++) {
        const id = `7a000000-0000-4000-8000-${String(items.length).padStart(12, "0")}`;
        items.push(item({ id, parentId: story, itemType: 4, title: `${verbs[rnd(10)]} ${words[(e + t) % 10].toLowerCase()} ${["API", "UI", "copy", "tests", "metrics"][t]}`, status: 1 + rnd(5), priority: 1 + rnd(4), assigneeId: rnd(4) === 0 ? "" : [ME, ...TEAM.map((x) => x[0])][rnd(4)], storyPoints: rnd(3) === 0 ? undefined : [1, 2, 3, 5][rnd(4)], position: key() }));
      }
    }
  }
  node.addProject(P1, items);
  node.projects.get(P1).items.get(P1).title = "Website relaunch";
  node.projects.get(P1).items.get(P1).description = "The new marketing site and customer portal, live by spring.";
  node.addProject(P2, [item({ id: "7a000000-0000-4000-8000-ffff00000001", parentId: P2, title: "Pick a push provider", status: 2, position: "a0" })]);
  node.projects.get(P2).items.get(P2).title = "Mobile app";
  for (const p of [P1, P2]) {
    node.addMember(p, ME, 3, "Ada Lovelace");
    for (const [id, name] of TEAM) node.addMember(p, id, 2, name);
  }
  if (!quiet) {
    setInterval(() => {
      const live = [...node.projects.get(P1).items.values()].filter((w) => w.deletedAt === 0n && w.itemType === 4);
      const w = live[rnd(live.length)];
      if (w) node.change(P1, w.id, { status: 1 + rnd(5) }, undefined, TEAM[rnd(3)][0]);
    }, 4000);
  }
  return P1;
}

server.listen(port, "127.0.0.1", () => {
  const t = token({ sub: ME, tenant_id: "demo", name: "Ada Lovelace", email: "ada@example.com" });
  console.log(`pm board (fake node, ${itemCount} items): http://127.0.0.1:${port}/#token=${t}`);
});
