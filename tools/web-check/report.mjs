// Headless-browser check of a static HTML file, e.g. the report of `lesion report` (run
// through scripts/report-check).
//
// Opens the file in Debian's Chromium with every network request refused (a report must stand
// alone: only file: and data: URLs may load), fails on console errors, uncaught page errors,
// refused requests, a plot (<svg>) drawn with no size or an image that did not decode, saves
// a full-page screenshot and prints one JSON line.
// Exit status: 0 passed, 1 a check failed, 2 bad usage.

import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { check, main, withPage } from './browser.mjs';

const USAGE = 'usage: scripts/report-check REPORT.html SCREENSHOT.png [--timeout SECONDS] [--width PIXELS]';
function usage(message) {
  console.error(`report-check: ${message}\n${USAGE}`);
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { timeout: 60, width: 1400, positional: [] };
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i];
    if (key === '-h' || key === '--help') { console.log(USAGE); process.exit(0); }
    if (key === '--timeout' || key === '--width') {
      if (argv[i + 1] === undefined) usage(`${key} needs a value`);
      opts[key.slice(2)] = Number(argv[++i]);
      continue;
    }
    if (key.startsWith('-')) usage(`unexpected argument ${JSON.stringify(key)}`);
    opts.positional.push(key);
  }
  if (opts.positional.length !== 2) usage('give the HTML file and the screenshot path');
  [opts.html, opts.out] = opts.positional;
  if (!(opts.timeout > 0)) usage('--timeout must be a positive number of seconds');
  if (!(opts.width > 0)) usage('--width must be a positive number of pixels');
  if (!existsSync(opts.html) || !statSync(opts.html).isFile()) usage(`no such file: ${opts.html}`);
  return opts;
}

async function run(opts) {
  return withPage({ name: 'report-check', width: opts.width, actionTimeoutMs: opts.timeout * 1000, out: opts.out },
    async (page, errors) => {
      // A report must stand alone: only file: and data: URLs may load.
      const refused = [];
      await page.route('**/*', (route) => {
        const url = route.request().url();
        if (url.startsWith('file:') || url.startsWith('data:')) return route.continue();
        refused.push(url);
        return route.abort();
      });
      const url = pathToFileURL(resolve(opts.html)).href;
      await page.goto(url, { waitUntil: 'load' });

      const view = await page.evaluate(() => {
        const svgs = [...document.querySelectorAll('svg')].map((s) => {
          const r = s.getBoundingClientRect();
          return { width: r.width, height: r.height, shapes: s.querySelectorAll('path,polyline,polygon,circle,rect,line').length };
        });
        const images = [...document.images].map((i) => ({ ok: i.complete && i.naturalWidth > 0, alt: i.alt }));
        const headings = [...document.querySelectorAll('h1,h2')].map((h) => h.textContent.trim());
        return { svgs, images, headings, title: document.title };
      });
      check(view.headings.length > 0, 'the page has no heading: not a report?');
      view.svgs.forEach((s, i) => check(s.width > 0 && s.height > 0 && s.shapes > 0,
        `plot ${i + 1} of ${view.svgs.length} is empty or has no size (${JSON.stringify(s)})`));
      view.images.forEach((im, i) => check(im.ok, `image ${i + 1} (${im.alt}) did not decode`));
      check(refused.length === 0, `the page tried to load ${refused.length} outside resource(s): ${refused.slice(0, 3).join(', ')}`);
      check(errors.page.length === 0, `uncaught errors in the page: ${errors.page.join(' | ')}`);
      check(errors.console.length === 0, `console errors: ${errors.console.join(' | ')}`);
      return {
        html: opts.html,
        title: view.title,
        headings: view.headings,
        plots: view.svgs.length,
        images: view.images.length,
      };
    });
}

const opts = parseArgs(process.argv.slice(2));
await main('report-check', () => run(opts), { html: opts.html }, opts.out);
