// Bundles the viewer's script into dist/viewer.js (or into the directory given), minified.
// `make viewer` runs it after generating src/gen from the proto; the bundle is committed
// and embedded in the meg-decoder binary with src/index.html and src/viewer.css (no CDN,
// no network).
import { build } from "esbuild";
import { mkdirSync } from "node:fs";
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
