// Builds web/dist/, which the gateway embeds at compile time: the player page and its assets, and the
// engine as an ES module for integrators. Deterministic: no timestamps, no absolute paths, files
// written in a fixed order; building twice gives identical bytes.
//
//   dist/index.html        the player page (served at / and /player)
//   dist/player.js         IIFE: hls.js + engine + page, minified
//   dist/player.css
//   dist/p2p-engine.mjs    ESM: the engine without hls.js
//   dist/hls.worker.js     hls.js's transmuxing worker (the page sets workerPath to it)
//   dist/hls.js-LICENSE.txt

import { build } from 'esbuild';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, 'dist');
const hlsPackage = JSON.parse(await readFile(join(root, 'node_modules/hls.js/package.json'), 'utf8'));

const common = {
  absWorkingDir: root,
  bundle: true,
  write: false,
  target: ['es2022', 'chrome109', 'firefox115', 'safari16'],
  legalComments: 'none',
  charset: 'utf8',
  logLevel: 'warning',
};

const [player, engine] = await Promise.all([
  build({
    ...common,
    entryPoints: ['src/page/player.js'],
    format: 'iife',
    minify: true,
    banner: {
      js: `/*! Edge gateway player. Includes hls.js ${hlsPackage.version} (Apache-2.0): /hls.js-LICENSE.txt */`,
    },
    outfile: 'dist/player.js',
  }),
  build({
    ...common,
    entryPoints: ['src/index.js'],
    format: 'esm',
    minify: false,
    banner: { js: '// P2P engine for hls.js pages (edge gateway). See README.md in the web/ sources.' },
    outfile: 'dist/p2p-engine.mjs',
  }),
]);

const bundleText = (result) => {
  if (result.outputFiles.length !== 1) throw new Error('expected one output file');
  return result.outputFiles[0].text;
};

const engineText = bundleText(engine);
if (engineText.includes('MediaSource')) throw new Error('p2p-engine.mjs must not contain hls.js');

// hls.js's worker: its trailing source map reference points to a file we do not ship.
const worker = (await readFile(join(root, 'node_modules/hls.js/dist/hls.worker.js'), 'utf8')).replace(
  /\n\/\/# sourceMappingURL=.*\s*$/,
  '\n',
);

const files = new Map([
  ['index.html', await readFile(join(root, 'src/page/index.html'), 'utf8')],
  ['player.css', await readFile(join(root, 'src/page/player.css'), 'utf8')],
  ['player.js', bundleText(player)],
  ['p2p-engine.mjs', engineText],
  ['hls.worker.js', worker],
  ['hls.js-LICENSE.txt', await readFile(join(root, 'node_modules/hls.js/LICENSE'), 'utf8')],
]);

for (const [name, text] of files) {
  if (text.includes(root)) throw new Error(`${name} contains the absolute build path`);
}

await mkdir(dist, { recursive: true });
// Only what this build produces: the gateway serves every file in dist/.
for (const name of await readdir(dist)) {
  if (!files.has(name)) await rm(join(dist, name), { recursive: true, force: true });
}
for (const name of [...files.keys()].sort()) {
  await writeFile(join(dist, name), files.get(name));
}
console.log(
  [...files.keys()]
    .sort()
    .map((n) => `dist/${n}  ${Buffer.byteLength(files.get(n))} bytes`)
    .join('\n'),
);
