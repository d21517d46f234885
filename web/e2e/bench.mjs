// Figures of the web page (make web-bench; scripts/web-e2e.sh --bench starts the platform):
// first contentful paint and time to an interactive terminal on the lab page, the bytes a
// first load transfers (compressed, the terminal frame included), and the gateway's CPU time
// while lab pages sit idle (no polling: it should be near zero). Prints figures; asserts nothing.

import { readFileSync } from 'node:fs';
import { chromium } from 'playwright-core';

const DEV = process.env.CKS_WEB_DEV_URL;
const PID = process.env.CKS_WEB_GATEWAY_PID;
const IDLE = Number(process.env.CKS_WEB_BENCH_IDLE_SECONDS ?? 60);
const PAGES = Number(process.env.CKS_WEB_BENCH_IDLE_PAGES ?? 5);
const TICKS = 100; // USER_HZ on Linux

const cpuSeconds = () => {
  const f = readFileSync(`/proc/${PID}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / TICKS; // utime + stime
};

const browser = await chromium.launch({
  executablePath: process.env.CKS_CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const api = (page, method, path, body) =>
  page.evaluate(
    async ([m, p, b]) => (await fetch(`/api/v1${p}`, { method: m, headers: { 'content-type': 'application/json' }, body: b })).json(),
    [method, path, body ? JSON.stringify(body) : undefined],
  );

const setup = await browser.newPage();
await setup.goto(`${DEV}/`);
for (const s of await api(setup, 'GET', '/sessions')) await api(setup, 'DELETE', `/sessions/${s.id}`);
let session;
for (let i = 0; i < 100 && !session; i++) {
  const r = await api(setup, 'POST', '/sessions', { scenarioId: 'web-e2e' });
  if (r.sessionId) session = r.sessionId;
  else await new Promise((r) => setTimeout(r, 200)); // the previous session still ending
}
const doc = await setup.evaluate(async () => (await fetch('/openapi.json')).json()).catch(() => null);
const terminals = Boolean(doc?.paths?.['/api/v1/sessions/{id}/terminals']);

// First load of the lab, cold cache.
const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
const page = await context.newPage();
let bytes = 0;
const counted = [];
page.on('requestfinished', async (req) => {
  const sizes = await req.sizes().catch(() => null);
  if (sizes) {
    bytes += sizes.responseBodySize + sizes.responseHeadersSize;
    counted.push(req.url());
  }
});
const t0 = Date.now();
await page.goto(`${DEV}/lab/${session}`);
await page.getByTestId('task').waitFor();
const fcp = await page.evaluate(() => performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null);
let tti = null;
if (terminals) {
  await page.frameLocator('iframe').first().locator('#terminal-status[data-state="ready"]').waitFor({ timeout: 60_000 });
  tti = Date.now() - t0;
}
await page.waitForLoadState('networkidle').catch(() => undefined);
await new Promise((r) => setTimeout(r, 1000));
console.log(`lab page, first load: first contentful paint ${fcp?.toFixed(0)} ms`);
console.log(`lab page, first load: interactive terminal after ${tti === null ? 'n/a (no terminals in this gateway)' : `${tti} ms`}`);
console.log(`lab page, first load: ${(bytes / 1024).toFixed(1)} KiB transferred in ${counted.length} requests (event stream and WebSocket not counted)`);
await context.close();

// Idle lab pages: the gateway's CPU while they sit there.
if (PID) {
  const idle = [];
  for (let i = 0; i < PAGES; i++) {
    const p = await browser.newPage();
    await p.goto(`${DEV}/lab/${session}`);
    await p.getByTestId('task').waitFor();
    idle.push(p);
  }
  await new Promise((r) => setTimeout(r, 2000));
  const before = cpuSeconds();
  await new Promise((r) => setTimeout(r, IDLE * 1000));
  const used = cpuSeconds() - before;
  console.log(
    `gateway CPU with ${PAGES} idle lab pages over ${IDLE} s: ${(used * 1000).toFixed(0)} ms (${((used * 1000) / PAGES).toFixed(1)} ms per page, ${((100 * used) / IDLE).toFixed(3)} % of a core)`,
  );
}
await api(setup, 'DELETE', `/sessions/${session}`);
await browser.close();
