// Headless-browser check of the `lesion serve` web page (run through scripts/web-check).
//
// Opens the page in Debian's Chromium, uploads one image through #file, waits for the result and
// checks what a person would see: three class probabilities, the lesion outline drawn on the
// canvas, and the research-tool notice. Saves a full-page screenshot and prints one JSON line.
// Exit status: 0 passed, 1 a check failed, 2 bad usage.

import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { CheckFailed, check, main, withPage } from './browser.mjs';

const USAGE = 'usage: scripts/web-check --url http://127.0.0.1:PORT --image IMG --out SCREENSHOT.png [--token T] [--timeout SECONDS]';
// Actions on the page (clicks, locators) time out after this; the result wait has --timeout.
const PAGE_TIMEOUT_MS = 30_000;
const VIEWPORT_WIDTH = 1366;
// The outline colour of index.html (CONTOUR_RGB) and how far a canvas pixel may be from it.
const CONTOUR_RGB = [0, 229, 255];
const CONTOUR_TOLERANCE = 40;

function parseArgs(argv) {
  const opts = { timeout: 120 };
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i];
    const value = argv[i + 1];
    if (key === '-h' || key === '--help') { console.log(USAGE); process.exit(0); }
    if (!['--url', '--image', '--out', '--token', '--timeout'].includes(key) || value === undefined) {
      usage(`unexpected argument ${JSON.stringify(key)}`);
    }
    opts[key.slice(2)] = value;
    i++;
  }
  for (const k of ['url', 'image', 'out']) if (!opts[k]) usage(`--${k} is required`);
  opts.timeout = Number(opts.timeout);
  if (!(opts.timeout > 0)) usage('--timeout must be a positive number of seconds');
  if (!existsSync(opts.image) || !statSync(opts.image).isFile()) usage(`no such image: ${opts.image}`);
  try { new URL(opts.url); } catch { usage(`not a URL: ${opts.url}`); }
  return opts;
}

function usage(message) {
  console.error(`web-check: ${message}\n${USAGE}`);
  process.exit(2);
}

async function run(opts) {
  return withPage({ name: 'web-check', width: VIEWPORT_WIDTH, actionTimeoutMs: PAGE_TIMEOUT_MS, out: opts.out },
    async (page, errors) => {
      if (opts.token) {
        // The page reads its bearer token from sessionStorage (key "lesion.token").
        await page.addInitScript((t) => sessionStorage.setItem('lesion.token', t), opts.token);
      }

      const response = await page.goto(opts.url, { waitUntil: 'load' });
      check(response && response.ok(), `GET ${opts.url} answered ${response ? response.status() : 'nothing'}`);

      const notice = page.locator('#notice');
      check(await notice.isVisible(), 'the research-tool notice (#notice) is not visible');
      const noticeText = (await notice.innerText()).replace(/\s+/g, ' ');
      check(/not a medical device/i.test(noticeText) && /diagnos/i.test(noticeText),
        `the notice does not say "not a medical device … diagnosis": ${JSON.stringify(noticeText)}`);

      await page.setInputFiles('#file', resolve(opts.image));
      try {
        await page.waitForFunction(() => ['done', 'error'].includes(document.body.dataset.state),
          null, { timeout: opts.timeout * 1000, polling: 200 });
      } catch {
        const state = await page.evaluate(() => document.body.dataset.state);
        throw new CheckFailed(`no result within ${opts.timeout} s (page state: ${state})`);
      }
      const state = await page.evaluate(() => document.body.dataset.state);
      if (state === 'error') {
        const text = (await page.locator('#error').innerText().catch(() => '')).replace(/\s+/g, ' ').trim();
        throw new CheckFailed(`the page shows an error: ${text || '(empty #error)'}`);
      }
      check(await page.locator('#error').isHidden(), 'an error box is visible next to the result');

      // Probabilities: three bars, each with a number in [0, 1] that is also shown as text.
      const probs = await page.$$eval('#probabilities [data-class]', (els) => els.map((el) => ({
        name: el.dataset.class,
        value: Number(el.dataset.value),
        shown: el.querySelector('.prob-value') ? el.querySelector('.prob-value').textContent : '',
        visible: el.getBoundingClientRect().height > 0,
      })));
      check(probs.length === 3, `expected 3 class probabilities, the page shows ${probs.length}`);
      for (const p of probs) {
        check(Number.isFinite(p.value) && p.value >= 0 && p.value <= 1, `probability of ${p.name} is ${p.value}`);
        check(p.visible && p.shown.includes(p.value.toFixed(3)), `probability of ${p.name} is not shown as text`);
      }

      // The outline: count the canvas pixels in the outline colour (they must exist: the check can
      // fail), and read the page's own count of mask contour pixels.
      const canvas = await page.evaluate(([rgb, tol]) => {
        const c = document.getElementById('canvas');
        if (!c || !c.width || !c.height) return { width: 0, height: 0, contourColourPixels: 0 };
        const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < data.length; i += 4) {
          if (Math.abs(data[i] - rgb[0]) <= tol && Math.abs(data[i + 1] - rgb[1]) <= tol
              && Math.abs(data[i + 2] - rgb[2]) <= tol) n++;
        }
        const r = c.getBoundingClientRect();
        return { width: c.width, height: c.height, shownWidth: r.width, shownHeight: r.height, contourColourPixels: n };
      }, [CONTOUR_RGB, CONTOUR_TOLERANCE]);
      const view = await page.evaluate(() => window.lesionView || null);
      check(canvas.width > 0 && canvas.shownWidth > 0, 'the canvas (#canvas) is empty or not shown');
      check(view && view.lesionFound !== null, 'the answer has no segmentation (a bundle without a segmentation net?): no contour to check');
      check(view.lesionFound, 'the segmentation found no lesion in this image: no contour to check');
      check(view.contourPixels > 0, `the page found no lesion contour in the mask (lesionView: ${JSON.stringify(view)})`);
      check(canvas.contourColourPixels > 0, 'no outline-coloured pixels on the canvas: the contour was not drawn');

      // The server's input concerns (greyscale, very small) are shown exactly when it sent some.
      const concernsShown = await page.locator('#concerns').isVisible();
      check(Array.isArray(view.concerns), 'lesionView has no concerns list');
      check(concernsShown === view.concerns.length > 0,
        `concerns ${JSON.stringify(view.concerns)} but the #concerns note is ${concernsShown ? 'shown' : 'hidden'}`);
      check(await page.locator('#card').count() === 1, 'no model card (#card)');
      check(errors.page.length === 0, `uncaught errors in the page: ${errors.page.join(' | ')}`);
      return {
        url: opts.url,
        image: opts.image,
        image_size: [view.width, view.height],
        mask_size: [view.maskWidth, view.maskHeight],
        probabilities: Object.fromEntries(probs.map((p) => [p.name, p.value])),
        decisions: view.decisions || null,
        concerns: view.concerns,
        server_seconds: view.seconds ?? null,
        contour_pixels_mask: view.contourPixels,
        contour_pixels_canvas: canvas.contourColourPixels,
        canvas_size: [canvas.width, canvas.height],
      };
    });
}

const opts = parseArgs(process.argv.slice(2));
await main('web-check', () => run(opts), { url: opts.url, image: opts.image }, opts.out);
