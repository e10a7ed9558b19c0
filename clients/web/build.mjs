// Bundles the client into dist/ (git-ignored): dist/index.html, dist/static/{app.js,style.css}.
// No CDN: three.js and everything else is bundled from node_modules.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";

const out = "dist";
rmSync(out, { recursive: true, force: true });
mkdirSync(`${out}/static`, { recursive: true });
await build({
  entryPoints: ["src/main.js"],
  bundle: true,
  format: "esm",
  target: ["chrome100", "firefox100", "safari15"],
  minify: true,
  sourcemap: true,
  outfile: `${out}/static/app.js`,
  logLevel: "warning",
});
copyFileSync("index.html", `${out}/index.html`);
copyFileSync("style.css", `${out}/static/style.css`);
