#!/usr/bin/env node
// Real-browser player probe: plays a live HLS (hls.js) or DASH (dash.js) stream in Debian's
// headless Chromium for N seconds and writes what the player saw as JSON.
//
//   node tests/browser/player.mjs --url URL --seconds N [--out result.json] [--engine hls|dash]
//                                 [--chromium /usr/bin/chromium] [--dash-live-delay SECONDS]
//
// * Chromium is driven by playwright-core (no browser download), with a fresh temporary
//   user-data dir that Playwright creates and deletes.  A tiny HTTP server on 127.0.0.1 (random
//   port) serves player.html and the hls.js / dash.js builds from node_modules; the stream is
//   fetched cross-origin (the stream server must send CORS headers).
// * All times in the JSON are seconds relative to the moment the player was attached
//   (`started_at_epoch` is that moment as Unix time, to line it up with server kills etc.).
// * Exit code 0 whenever a result could be written (playback errors are data, not a crash);
//   2 if the browser or page could not be started at all (a JSON with `start_error` is still
//   written when possible); 64 for bad arguments.  On success the last stdout line is the path
//   of the JSON file.
// * A watchdog ends the process within seconds+25 s no matter what (it writes what it has,
//   with `watchdog_fired: true`).  SIGTERM/SIGINT likewise write what was recorded so far
//   (`aborted: "SIGTERM"`) and exit.  Leaving the process always kills Chromium (Playwright's
//   exit handler SIGKILLs the browser's process group and removes its profile directory).
//
// JSON (times t in seconds since the player was attached):
//   url, engine, hlsjs_version, engine_version, browser_version, browser_pid, seconds, elapsed,
//   started_at_epoch, complete (followed for the whole run), errors [{t, type, details, fatal,
//   frag_sn, frag_url, level, response_code, url, reason, message, action}], fatal_errors,
//   error_counts {details: n}, frags_loaded, frags [[t, sn, level, duration, cc]],
//   levels_loaded, levels [{t, level, media_sequence, end_sn, fragments, live, ...}],
//   waiting_events / playing_events / stalled_events [t], video_events [[t, type, currentTime]],
//   video_errors, engine_events, stalls [{start, end, duration, open?}], total_stall_seconds,
//   max_stall_seconds, time_samples [[t, currentTime]] (every 250 ms), buffer_samples
//   [[t, buffered ahead, readyState]], max_time_backwards, max_frozen_seconds,
//   started_playing_at, current_time_at_start, final_current_time, current_time_advanced,
//   play_rejections, console_errors [{t, kind, text}], http_errors [{t, url, status, failure}],
//   page_crashed, snapshot_failures, start_error, watchdog_fired, aborted.
//   A stall runs from a `waiting` event after the first `playing` to the next `playing` (or the
//   end of the run: `open: true`).

import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const WATCHDOG_MARGIN_S = 25;
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--autoplay-policy=no-user-gesture-required',
  '--disable-quic',
];
const FILES = {
  '/': ['player.html', 'text/html; charset=utf-8'],
  '/player.html': ['player.html', 'text/html; charset=utf-8'],
  '/lib/hls.js': ['node_modules/hls.js/dist/hls.min.js', 'text/javascript'],
  '/lib/dash.js': ['node_modules/dashjs/dist/modern/umd/dash.all.min.js', 'text/javascript'],
};

function usage(msg) {
  if (msg) process.stderr.write(`player.mjs: ${msg}\n`);
  process.stderr.write(
    'usage: node player.mjs --url URL --seconds N [--out result.json] [--engine hls|dash]\n');
  process.exit(64);
}

let opts;
try {
  opts = parseArgs({
    options: {
      url: { type: 'string' },
      seconds: { type: 'string' },
      out: { type: 'string' },
      engine: { type: 'string', default: 'hls' },
      chromium: { type: 'string', default: '/usr/bin/chromium' },
      'dash-live-delay': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  }).values;
} catch (e) {
  usage(e.message);
}
if (opts.help) usage();
if (!opts.url) usage('--url is required');
const SECONDS = Number(opts.seconds);
if (!Number.isFinite(SECONDS) || SECONDS <= 0) usage('--seconds must be a positive number');
if (!['hls', 'dash'].includes(opts.engine)) usage('--engine must be hls or dash');
const DASH_LIVE_DELAY = opts['dash-live-delay'] === undefined ? null : Number(opts['dash-live-delay']);
if (DASH_LIVE_DELAY !== null && !(DASH_LIVE_DELAY > 0)) usage('--dash-live-delay must be a positive number');
const OUT = path.resolve(opts.out || path.join(os.tmpdir(), `player-probe-${process.pid}-${Date.now()}.json`));

const T_PROCESS = Date.now();
const log = (msg) => process.stderr.write(`[player ${((Date.now() - T_PROCESS) / 1000).toFixed(2)}s] ${msg}\n`);

// ------------------------------------------------------------------------------------------
// Shared state (filled while running; used by the normal end, the watchdog and signals)
// ------------------------------------------------------------------------------------------
const meta = {
  browser_version: null,
  browser_pid: null,
  epoch0: null,          // Date.now() in the page when the player was attached
  page_crashed: false,
  page_closed: false,
  snapshot_failures: 0,
  start_error: null,
};
const nodeEvents = {
  console_errors: [],    // {epoch, kind, text}
  http_errors: [],       // {epoch, url, status, failure}
};
let lastSnapshot = null;
let finished = false;
let browser = null;
let server = null;

function rel(epochMs) {
  const base = meta.epoch0 ?? T_PROCESS;
  return Math.round(epochMs - base) / 1000;
}

// ------------------------------------------------------------------------------------------
// Result
// ------------------------------------------------------------------------------------------
function computeStalls(videoEvents, startedAt, tEnd) {
  const stalls = [];
  if (startedAt === null) return stalls;
  let open = null;
  for (const [t, type] of videoEvents) {
    if (t < startedAt) continue;
    if (type === 'waiting' && open === null) open = t;
    else if (type === 'playing' && open !== null) {
      stalls.push({ start: open, end: t, duration: round3(t - open) });
      open = null;
    }
  }
  if (open !== null) {
    const end = Math.max(open, tEnd);
    stalls.push({ start: open, end, duration: round3(end - open), open: true });
  }
  return stalls;
}

function round3(x) {
  return Math.round(x * 1000) / 1000;
}

function buildResult(extra) {
  const s = lastSnapshot || {};
  const tEnd = s.t_end ?? 0;
  const videoEvents = s.video_events || [];
  const samples = s.time_samples || [];
  const firstPlaying = videoEvents.find((e) => e[1] === 'playing');
  const startedAt = firstPlaying ? firstPlaying[0] : null;
  const stalls = computeStalls(videoEvents, startedAt, tEnd);

  let maxBack = 0;
  for (let i = 1; i < samples.length; i++) {
    const [, a] = samples[i - 1];
    const [, b] = samples[i];
    if (a !== null && b !== null && a - b > maxBack) maxBack = a - b;
  }
  // Longest run of samples (after playback started) in which currentTime did not move.
  let maxFrozen = 0;
  let runStart = null;
  let prev = null;
  for (const [t, ct] of samples) {
    if (startedAt === null || t < startedAt || ct === null) continue;
    if (prev !== null && Math.abs(ct - prev[1]) < 1e-3) {
      if (runStart === null) runStart = prev[0];
      maxFrozen = Math.max(maxFrozen, t - runStart);
    } else {
      runStart = null;
    }
    prev = [t, ct];
  }
  const ctAtStart = firstPlaying ? firstPlaying[2] : null;
  const finalCt = samples.length ? samples[samples.length - 1][1] : null;
  const errors = s.errors || [];
  const errorCounts = {};
  for (const e of errors) errorCounts[e.details] = (errorCounts[e.details] || 0) + 1;
  const consoleErrors = nodeEvents.console_errors.map((c) => ({ t: rel(c.epoch), kind: c.kind, text: c.text }));
  const httpErrors = nodeEvents.http_errors.map((h) => ({ t: rel(h.epoch), url: h.url, status: h.status, failure: h.failure }));

  return {
    url: opts.url,
    engine: opts.engine,
    hlsjs_version: opts.engine === 'hls' ? (s.engine_version ?? null) : null,
    engine_version: s.engine_version ?? null,
    browser_version: meta.browser_version,
    browser_pid: meta.browser_pid,
    seconds: SECONDS,
    elapsed: tEnd,
    started_at_epoch: meta.epoch0 === null ? null : meta.epoch0 / 1000,
    errors,
    fatal_errors: errors.filter((e) => e.fatal).length,
    error_counts: errorCounts,
    frags_loaded: s.frags_loaded ?? 0,
    frags: s.frags || [],
    levels_loaded: s.levels_loaded ?? 0,
    levels: s.levels || [],
    waiting_events: videoEvents.filter((e) => e[1] === 'waiting').map((e) => e[0]),
    playing_events: videoEvents.filter((e) => e[1] === 'playing').map((e) => e[0]),
    stalled_events: videoEvents.filter((e) => e[1] === 'stalled').map((e) => e[0]),
    video_events: videoEvents,
    video_errors: s.video_errors || [],
    engine_events: s.engine_events || [],
    stalls,
    total_stall_seconds: round3(stalls.reduce((acc, st) => acc + st.duration, 0)),
    max_stall_seconds: round3(stalls.reduce((acc, st) => Math.max(acc, st.duration), 0)),
    time_samples: samples,
    buffer_samples: s.buffer_samples || [],
    max_time_backwards: round3(maxBack),
    max_frozen_seconds: round3(maxFrozen),
    started_playing_at: startedAt,
    current_time_at_start: ctAtStart,
    final_current_time: finalCt,
    current_time_advanced: finalCt !== null && ctAtStart !== null ? round3(finalCt - ctAtStart) : 0,
    play_rejections: s.play_rejections || [],
    console_errors: consoleErrors,
    http_errors: httpErrors,
    page_crashed: meta.page_crashed,
    snapshot_failures: meta.snapshot_failures,
    start_error: meta.start_error ?? s.start_error ?? null,
    watchdog_fired: false,
    aborted: null,
    ...extra,
  };
}

function writeResult(result) {
  fs.mkdirSync(path.dirname(OUT), { recursive: true });
  const tmp = `${OUT}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, JSON.stringify(result, null, 1) + '\n');
  fs.renameSync(tmp, OUT);
}

// Leave now (synchronously): Playwright's 'exit' handler SIGKILLs Chromium's process group.
function finish(code, extra) {
  if (finished) return;
  finished = true;
  try {
    const result = buildResult(extra);
    // The page was followed for the whole run (no frozen renderer, crash, watchdog or signal).
    result.complete = Boolean(lastSnapshot) && result.elapsed >= SECONDS - 0.5 && !result.watchdog_fired
      && !result.aborted && !result.page_crashed && !result.start_error;
    writeResult(result);
    if (code === 0) process.stdout.write(`${OUT}\n`);
  } catch (e) {
    log(`could not write ${OUT}: ${e && e.stack || e}`);
    code = code || 2;
  }
  process.exit(code);
}

const watchdog = setTimeout(() => {
  log(`watchdog: still running after ${SECONDS + WATCHDOG_MARGIN_S}s, giving up`);
  if (!lastSnapshot && !meta.start_error) meta.start_error = 'watchdog fired before the player was running';
  finish(lastSnapshot ? 0 : 2, { watchdog_fired: true });
}, (SECONDS + WATCHDOG_MARGIN_S) * 1000);
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) {
  process.on(sig, () => {
    log(`${sig}: writing what was recorded and exiting`);
    finish(lastSnapshot ? 0 : 2, { aborted: sig });
  });
}

// ------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function withTimeout(promise, ms, what) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

function startServer() {
  return new Promise((resolve, reject) => {
    const srv = http.createServer((req, res) => {
      const p = new URL(req.url, 'http://x').pathname;
      if (p === '/time') {  // dash.js clock sync (http-xsdate) without leaving 127.0.0.1
        res.writeHead(200, { 'Content-Type': 'text/plain', 'Cache-Control': 'no-store' });
        res.end(new Date().toISOString());
        return;
      }
      const entry = FILES[p];
      if (!entry) {
        res.writeHead(p === '/favicon.ico' ? 204 : 404, { 'Cache-Control': 'no-store' });
        res.end();
        return;
      }
      fs.readFile(path.join(HERE, entry[0]), (err, body) => {
        if (err) {
          res.writeHead(500, { 'Content-Type': 'text/plain' });
          res.end(String(err));
          return;
        }
        res.writeHead(200, { 'Content-Type': entry[1], 'Cache-Control': 'no-store' });
        res.end(body);
      });
    });
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => resolve(srv));
  });
}

// The browser is a direct child of this process (Playwright spawns it detached: own group).
function findBrowserPid() {
  try {
    for (const name of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(name)) continue;
      let stat;
      try {
        stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
      } catch {
        continue;
      }
      const close = stat.lastIndexOf(')');
      const comm = stat.slice(stat.indexOf('(') + 1, close);
      const ppid = Number(stat.slice(close + 2).split(' ')[1]);
      if (ppid === process.pid && /chrom/i.test(comm)) return Number(name);
    }
  } catch {
    // /proc unavailable: the PID is only informational
  }
  return null;
}

// ------------------------------------------------------------------------------------------
// Main
// ------------------------------------------------------------------------------------------
async function main() {
  for (const [, [rel_]] of Object.entries(FILES)) {
    if (!fs.existsSync(path.join(HERE, rel_))) {
      throw new Error(`${path.join(HERE, rel_)} is missing: run \`bash scripts/setup.sh\``);
    }
  }
  let chromium;
  try {
    ({ chromium } = await import('playwright-core'));
  } catch (e) {
    throw new Error(`cannot load playwright-core (run \`bash scripts/setup.sh\`): ${e.message}`);
  }
  server = await startServer();
  const base = `http://127.0.0.1:${server.address().port}`;

  browser = await chromium.launch({
    executablePath: opts.chromium,
    args: CHROMIUM_ARGS,
    headless: true,
    timeout: 30000,
    // Our own handlers write the partial result; leaving the process kills the browser.
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
  });
  meta.browser_version = browser.version();
  meta.browser_pid = findBrowserPid();
  log(`browser ${meta.browser_version} pid ${meta.browser_pid}`);
  browser.on('disconnected', () => log('browser disconnected'));

  const context = await browser.newContext({ viewport: { width: 640, height: 360 } });
  const page = await context.newPage();
  page.on('console', (msg) => {
    if (msg.type() === 'error') nodeEvents.console_errors.push({ epoch: Date.now(), kind: 'console', text: msg.text() });
  });
  page.on('pageerror', (err) => nodeEvents.console_errors.push({ epoch: Date.now(), kind: 'pageerror', text: String(err && err.message || err) }));
  page.on('crash', () => {
    meta.page_crashed = true;
    nodeEvents.console_errors.push({ epoch: Date.now(), kind: 'crash', text: 'page crashed' });
  });
  page.on('close', () => { meta.page_closed = true; });
  page.on('response', (r) => {
    if (r.status() >= 400) nodeEvents.http_errors.push({ epoch: Date.now(), url: r.url(), status: r.status(), failure: null });
  });
  page.on('requestfailed', (r) => {
    const f = r.failure();
    nodeEvents.http_errors.push({ epoch: Date.now(), url: r.url(), status: null, failure: f ? f.errorText : 'failed' });
  });

  await page.goto(`${base}/`, { timeout: 15000 });
  await page.addScriptTag({ url: opts.engine === 'dash' ? '/lib/dash.js' : '/lib/hls.js' });
  const started = await withTimeout(
    page.evaluate((cfg) => window.__probe.start(cfg), { engine: opts.engine, url: opts.url, sampleMs: 250, dashLiveDelay: DASH_LIVE_DELAY }),
    10000, 'starting the player');
  meta.epoch0 = started.epoch0;
  if (started.start_error) {
    meta.start_error = started.start_error;
    throw new Error(`player could not start: ${started.start_error}`);
  }
  log(`${opts.engine} ${started.engine_version} attached; playing ${opts.url} for ${SECONDS}s`);

  const deadline = meta.epoch0 + SECONDS * 1000;
  for (;;) {
    const remaining = deadline - Date.now();
    if (remaining <= 0) break;
    await sleep(Math.min(1000, remaining));
    if (meta.page_crashed || meta.page_closed) break;
    const final = Date.now() >= deadline;
    try {
      lastSnapshot = await withTimeout(page.evaluate((f) => window.__probe.snapshot(f), final), 5000, 'snapshot');
    } catch (e) {
      meta.snapshot_failures += 1;
      log(`snapshot failed: ${e.message}`);
    }
  }
  if (!meta.page_crashed && !meta.page_closed && (!lastSnapshot || lastSnapshot.t_end < SECONDS)) {
    try {
      lastSnapshot = await withTimeout(page.evaluate(() => window.__probe.snapshot(true)), 5000, 'final snapshot');
    } catch (e) {
      log(`final snapshot failed: ${e.message}`);
    }
  }
  await withTimeout(browser.close(), 5000, 'browser.close').catch((e) => log(e.message));
  log(`done: ${lastSnapshot ? lastSnapshot.frags_loaded : 0} fragments, ${lastSnapshot ? lastSnapshot.errors.length : 0} errors`);
}

main().then(
  () => {
    clearTimeout(watchdog);
    if (server) server.close();
    finish(lastSnapshot ? 0 : 2, lastSnapshot ? {} : { start_error: meta.start_error || 'no data recorded' });
  },
  (err) => {
    log(`could not start: ${err && err.message || err}`);
    if (!meta.start_error) meta.start_error = String(err && err.message || err);
    // Data recorded before a late failure is still a result.
    finish(lastSnapshot ? 0 : 2, {});
  },
);
