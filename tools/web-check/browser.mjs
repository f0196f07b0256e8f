// What both headless-browser checks share (check.mjs: the service page; report.mjs: a report
// file): Debian's Chromium started on a fresh profile with the network features that would
// reach out turned off, the page's console and uncaught errors collected, a screenshot kept
// when a check fails, the profile removed afterwards, and the one-JSON-line result.

import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const CHROMIUM = '/usr/bin/chromium';
// This machine has no internet: nothing in the browser may try to reach it.
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
const LAUNCH_TIMEOUT_MS = 60_000;
const VIEWPORT_HEIGHT = 900;

export class CheckFailed extends Error {}
export const check = (ok, message) => { if (!ok) throw new CheckFailed(message); };

/// Runs `body(page, errors)` on a fresh page of `width` pixels (actions time out after
/// `actionTimeoutMs`); `errors.console` / `errors.page` fill as the page logs them. On any
/// failure the screenshot `out` still shows what went wrong. Returns what `body` returns,
/// with `console_errors`, `screenshot` and `elapsed_s` added.
export async function withPage({ name, width, actionTimeoutMs, out }, body) {
  const started = Date.now();
  const profile = mkdtempSync(join(tmpdir(), `${name}-profile-`));
  const errors = { console: [], page: [] };
  let context;
  let page;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width, height: VIEWPORT_HEIGHT },
      deviceScaleFactor: 1,
      timeout: LAUNCH_TIMEOUT_MS,
    });
    page = context.pages()[0] || await context.newPage();
    page.setDefaultTimeout(actionTimeoutMs);
    page.on('console', (m) => { if (m.type() === 'error') errors.console.push(m.text()); });
    page.on('pageerror', (e) => errors.page.push(String(e && e.message || e)));
    const result = await body(page, errors);
    await page.screenshot({ path: out, fullPage: true });
    return {
      ...result,
      console_errors: errors.console,
      screenshot: out,
      elapsed_s: Number(((Date.now() - started) / 1000).toFixed(2)),
    };
  } catch (err) {
    if (page) await page.screenshot({ path: out, fullPage: true }).catch(() => {});
    throw err;
  } finally {
    if (context) await context.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  }
}

/// Prints `run()`'s result as one JSON line (exit 0), or the failure's first line on stderr and
/// `{ok: false, ...failed, error}` on stdout (exit 1). Playwright's messages carry a coloured
/// call log after their first line: only the first is kept.
export async function main(name, run, failed, out) {
  try {
    console.log(JSON.stringify({ ok: true, ...(await run()) }));
  } catch (err) {
    const message = String((err && err.message) || err).split('\n')[0];
    console.error(`${name}: FAILED: ${message} (screenshot, if one was taken: ${out})`);
    console.log(JSON.stringify({ ok: false, ...failed, error: message }));
    process.exit(1);
  }
}
