// build.mjs bundles the board into dist/: index.html and content-hashed
// assets/app-<hash>.js and assets/app-<hash>.css. The output depends only on
// the sources and the pinned esbuild, so a rebuild gives identical bytes
// (`make web-check` relies on that).
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, "dist");

/** @type {import("esbuild").BuildOptions} */
const options = {
  absWorkingDir: root,
  entryPoints: { app: "src/ui/main.tsx" },
  entryNames: "assets/[name]-[hash]",
  bundle: true,
  format: "esm",
  target: ["es2022", "chrome111", "firefox113", "safari16"],
  platform: "browser",
  minify: true,
  jsx: "automatic",
  jsxImportSource: "preact",
  legalComments: "eof",
  charset: "utf8",
  metafile: true,
  write: false,
  outdir: dist,
  logLevel: "warning",
};

async function build() {
  const result = await esbuild.build(options);
  await rm(dist, { recursive: true, force: true });
  await mkdir(join(dist, "assets"), { recursive: true });
  const names = { js: "", css: "" };
  for (const file of result.outputFiles) {
    await writeFile(file.path, file.contents);
    const ext = file.path.endsWith(".css") ? "css" : "js";
    names[ext] = basename(file.path);
  }
  const template = await readFile(join(root, "src/index.html"), "utf8");
  // Absolute: the node serves the page at / and the files under /assets/.
  const html = template
    .replace("{{css}}", `/assets/${names.css}`)
    .replace("{{js}}", `/assets/${names.js}`);
  await writeFile(join(dist, "index.html"), html);
  for (const file of result.outputFiles) {
    console.log(`${file.path.slice(root.length + 1)}  ${file.contents.length} bytes`);
  }
}

await build();
