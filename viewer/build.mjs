// Builds the viewer into dist/ (or the directory given): the page, its stylesheet and one
// bundled, minified script. `make viewer` runs it after generating src/gen from the proto;
// the output is committed and embedded in the meg-decoder binary (no CDN, no network).
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";
import { join } from "node:path";

const out = process.argv[2] ?? "dist";
mkdirSync(out, { recursive: true });
await build({
  entryPoints: ["src/main.ts"],
  bundle: true,
  minify: true,
  format: "iife",
  target: "es2020",
  legalComments: "none",
  outfile: join(out, "viewer.js"),
  logLevel: "warning",
});
copyFileSync("src/index.html", join(out, "index.html"));
copyFileSync("src/viewer.css", join(out, "viewer.css"));
