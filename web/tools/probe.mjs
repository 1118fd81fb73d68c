// Manual check in headless Chromium: opens N player pages and prints what they did.
//
//   node tools/probe.mjs [--url http://127.0.0.1:8081/?level=0] [--pages 2] [--seconds 40]
//                        [--stagger 4] [--chromium /usr/bin/chromium]
//
// Prints per page every 5 s: playback time, p2pStats; at the end a JSON summary. Not a test: the
// browser tests live in tests/browser/.

import { chromium } from 'playwright-core';

/** --name value pairs; a --flag followed by another option (or nothing) is true. */
const args = Object.fromEntries(
  process.argv.slice(2).flatMap((a, i, all) =>
    a.startsWith('--') ? [[a.slice(2), all[i + 1] === undefined || all[i + 1].startsWith('--') ? true : all[i + 1]]] : [],
  ),
);
const url = args.url ?? 'http://127.0.0.1:8081/?level=0';
const pages = Number(args.pages ?? 2);
const seconds = Number(args.seconds ?? 40);
const traceTail = Number(args.trace ?? 0);
const staggerMs = Number(args.stagger ?? 4) * 1000;

const browser = await chromium.launch({
  executablePath: args.chromium ?? '/usr/bin/chromium',
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-features=WebRtcHideLocalIpsWithMdns',
    '--allow-loopback-in-peer-connection',
    '--autoplay-policy=no-user-gesture-required',
  ],
});

const opened = [];
const snapshot = (page) =>
  page.evaluate(() => {
    const v = document.getElementById('video');
    const s = window.p2pStats ?? {};
    return {
      currentTime: Number(v.currentTime.toFixed(2)),
      paused: v.paused,
      httpBytes: s.httpBytes,
      p2pBytes: s.p2pBytes,
      peers: s.peers,
      verified: s.verifiedSegments,
      rejected: s.rejectedSegments,
      stalls: s.stalls,
      uploaded: s.uploadedBytes,
      seeder: s.seeder,
      peerId: s.peerId,
      warnings: s.warnings,
      failures: s.failures,
      bitrate: s.bitrate,
    };
  });

try {
  for (let i = 0; i < pages; i++) {
    const context = await browser.newContext();
    const page = await context.newPage();
    const log = [];
    page.on('console', (m) => {
      if (m.type() === 'warning' || m.type() === 'error') log.push(`${m.type()}: ${m.text()}`);
    });
    page.on('pageerror', (e) => log.push(`pageerror: ${e.message}`));
    await page.goto(url);
    opened.push({ page, log });
    if (i + 1 < pages) await new Promise((r) => setTimeout(r, staggerMs));
  }
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) {
    await new Promise((r) => setTimeout(r, 5000));
    for (const [i, { page }] of opened.entries()) console.log(`page ${i}`, JSON.stringify(await snapshot(page)));
  }
  const summary = [];
  for (const { page, log } of opened) {
    const trace = await page.evaluate(() => window.p2pEngine?.traceLog ?? null);
    summary.push({ ...(await snapshot(page)), console: log.slice(0, 30), trace: traceTail ? trace?.slice(-traceTail) : undefined });
  }
  console.log(JSON.stringify(summary, null, 2));
} finally {
  await browser.close();
}
