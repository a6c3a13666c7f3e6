// The browser test: headless Chromium (WebGPU on SwiftShader) driven by playwright-core.
// It loads the page, trains 20+ steps and checks the loss fell with no console errors, classifies
// a known image, checks that the page's top-1 for a CLI-made checkpoint equals `resnet predict`,
// saves the page's weights for `resnet eval`, and writes a screenshot and the figures to OUT.
//
// node web/test/browser.mjs --checkpoint CLI.safetensors --expected PREDICT.jsonl --out DIR
//   [--chromium /usr/bin/chromium] [--steps 20]
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve } from '../serve.mjs';

const WEB = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  if (i > 0 && process.argv[i + 1]) return process.argv[i + 1];
  if (fallback === undefined) throw new Error(`missing --${name}`);
  return fallback;
};
const checkpoint = arg('checkpoint');
const expected = fs.readFileSync(arg('expected'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
const out = arg('out');
const steps = Number(arg('steps', '20'));
fs.mkdirSync(out, { recursive: true });

let failures = 0;
function check(ok, what) {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failures++;
}

const server = await serve(0);
const url = `http://127.0.0.1:${server.address().port}/`;
const browser = await chromium.launch({
  executablePath: arg('chromium', '/usr/bin/chromium'),
  headless: true,
  args: ['--headless', '--no-sandbox', '--enable-unsafe-webgpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
  // playwright starts the browser with a fresh, temporary profile
});
const figures = {};
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 1500 }, acceptDownloads: true });
  const consoleErrors = [];
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(m.text());
    if (m.type() === 'error' || m.type() === 'warning') console.log(`  console ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  page.setDefaultTimeout(600_000);

  const t0 = Date.now();
  await page.goto(url);
  // polling by timer: SwiftShader's long compute jobs stall animation frames (playwright's default)
  const poll = { polling: 500 };
  await page.waitForFunction(() => window.demo && window.demo.engine && !document.getElementById('start').disabled,
    null, poll);
  const adapter = await page.textContent('#adapter');
  console.log(adapter);
  check(adapter.startsWith('WebGPU adapter:'), 'the page shows the WebGPU adapter');
  check((await page.inputValue('#model')) === 'resnet20' && (await page.inputValue('#batch')) === '64',
    'resnet20 at batch 64 by default');

  // clicks go through the DOM: playwright's actionability checks wait for animation frames,
  // which this headless WebGPU setup does not produce
  const click = (sel) => page.$eval(sel, (el) => el.click());

  // train
  await click('#start');
  for (let last = -1; ;) {
    const [n, errors, text] = await page.evaluate(() => [window.demo.history.length, window.demo.errors.length,
      document.getElementById('status').textContent]);
    if (n >= steps || errors > 0) break;
    if (n !== last) console.log(`  ${text}`);
    last = n;
    await page.waitForTimeout(1000);
  }
  await click('#start'); // pause
  await page.evaluate(() => window.demo.busy);
  await page.screenshot({ path: path.join(out, 'training.png'), fullPage: true });
  const run = await page.evaluate(() => ({
    history: window.demo.history, errors: window.demo.errors,
    firstStep: window.demo.firstStepSeconds, testAcc: window.demo.testAcc,
  }));
  check(run.errors.length === 0, `no page errors (${run.errors.join('; ')})`);
  const h = run.history;
  check(h.length >= steps, `trained ${h.length} steps (>= ${steps})`);
  const mean = (rows) => rows.reduce((s, r) => s + r.loss, 0) / rows.length;
  const first = mean(h.slice(0, 5)), last = mean(h.slice(-5));
  check(last < first, `the loss fell: mean of the first 5 steps ${first.toFixed(3)}, of the last 5 ${last.toFixed(3)}`);
  const ips = h.slice(2).map((r) => r.ips).sort((a, b) => a - b);
  figures.train_images_per_sec_median = ips[Math.floor(ips.length / 2)];
  figures.page_load_to_first_step_s = run.firstStep;
  figures.adapter = adapter;
  figures.losses = h.map((r) => Number(r.loss.toFixed(4)));
  console.log(`resnet20 batch 64: median ${figures.train_images_per_sec_median.toFixed(1)} images/s; ` +
    `page load to first step ${run.firstStep.toFixed(1)} s`);

  // classify a known image (a bundled CIFAR-10 test image) through the file input
  await page.setInputFiles('#files', path.join(WEB, 'data/samples/cat.png'));
  await page.waitForFunction(() => document.querySelector('.result[data-image="cat.png"]'), null, poll);
  const bars = await page.$$eval('.result[data-image="cat.png"] .bar', (rows) => rows.map((r) => ({
    name: r.querySelector('.name').textContent, pct: parseFloat(r.querySelector('.pct').textContent),
  })));
  const classes = await page.evaluate(() => window.demo.engine.classes());
  check(bars.length === 5 && bars.every((b) => classes.includes(b.name)), 'the known image gets a top-5 of CIFAR-10 classes');
  check(bars.every((b, i) => i === 0 || b.pct <= bars[i - 1].pct) && bars.reduce((s, b) => s + b.pct, 0) <= 100.5,
    `its probabilities are sorted and sum to at most 100% (${bars.map((b) => `${b.name} ${b.pct}%`).join(', ')})`);

  // save the page's weights (for `resnet eval`, run by web/test.sh)
  const [download] = await Promise.all([page.waitForEvent('download'), click('#save')]);
  await download.saveAs(path.join(out, 'browser.safetensors'));
  check(fs.statSync(path.join(out, 'browser.safetensors')).size > 1_000_000, 'the page saved its weights');

  // the CLI's checkpoint: same top-1 as `resnet predict` on the same images
  await page.setInputFiles('#load', checkpoint);
  await page.waitForFunction(() => document.getElementById('status').textContent.startsWith('loaded'), null, poll);
  const files = expected.map((e) => e.image);
  await page.setInputFiles('#files', files);
  await page.waitForFunction((n) => document.querySelectorAll('.result').length === n, files.length, poll);
  const top1 = await page.$$eval('.result', (rs) => rs.map((r) => [r.dataset.image, r.dataset.top1]));
  let same = 0;
  for (const e of expected) {
    const got = top1.find(([img]) => img === path.basename(e.image));
    const ok = got && got[1] === e.top[0].class;
    if (ok) same++;
    else console.log(`  ${path.basename(e.image)}: page ${got && got[1]}, resnet predict ${e.top[0].class}`);
  }
  check(same === expected.length, `page top-1 equals resnet predict on ${same}/${expected.length} images`);
  // a checkpoint that answers one class for everything would agree with any page that loads it
  const answers = new Set(expected.map((e) => e.top[0].class));
  check(answers.size >= 3, `resnet predict's top-1 differs between images (${[...answers].join(', ')})`);
  figures.cli_checkpoint_top1_agreement = `${same}/${expected.length}`;

  await page.screenshot({ path: path.join(out, 'screenshot.png'), fullPage: true });

  // kernels timed in the page (resnet8 at batch 8: SwiftShader is slow), remembered in the page's
  // storage, and used by the next engine on this adapter
  const engineAfter = async (change) => {
    await page.evaluate(() => { window.__previous = window.demo.engine; });
    await change();
    await page.waitForFunction(() => window.demo.engine && window.demo.engine !== window.__previous &&
      !document.getElementById('tune').disabled, null, poll);
  };
  await engineAfter(() => page.$eval('#batch', (el) => {
    document.getElementById('model').value = 'resnet8';
    el.value = '8';
    el.dispatchEvent(new Event('change'));
  }));
  const tune = async () => {
    await click('#tune');
    await page.waitForFunction(() => document.getElementById('status').textContent.startsWith('kernels tuned'),
      null, poll);
    const text = await page.textContent('#status');
    await page.evaluate(() => { document.getElementById('status').textContent = ''; });
    return [Number((/(\d+) convolution shapes timed/.exec(text) || [])[1]), text];
  };
  const [timed, tuned] = await tune();
  console.log(`  ${tuned}`);
  // resnet8's training plan has 17 (op, shape) pairs; the test grid's predictions add the forward
  // of its 6 convolution shapes at their own batch
  check(timed === 23, `the page timed every kernel family at the 23 convolution (op, shape) pairs built (${timed})`);
  const stored = await page.evaluate(() => JSON.parse(localStorage.getItem('resnet-wgpu kernel choices') || '{}'));
  check((stored.choices || []).length === timed, 'the choices are remembered in the page\'s storage');
  figures.kernel_tuning = tuned;
  await engineAfter(() => click('#reset'));
  const engineText = await page.evaluate(() => window.demo.engine.adapter());
  check(engineText.includes(`${timed} convolution shapes with timed kernels`), `the next engine starts with them (${engineText})`);
  const [again] = await tune();
  check(again === 0, `nothing is left to time (${again})`);

  // the precision: fp32 by default, said on the page; mixed where the adapter has shader-f16
  // (a resnet8 engine in f16 is built and named), else the choice is disabled and says why
  check(engineText.includes('fp32'), `the page says it runs fp32 (${engineText})`);
  const f16 = await page.evaluate(() => window.demo.f16);
  figures.shader_f16 = f16;
  if (f16) {
    await engineAfter(() => page.$eval('#precision', (el) => {
      el.value = 'mixed';
      el.dispatchEvent(new Event('change'));
    }));
    const mixedText = await page.textContent('#adapter');
    check(mixedText.includes('mixed precision'), `the page says it runs mixed precision (${mixedText})`);
    check(await page.evaluate(() => window.demo.engine.precision()) === 'mixed', 'the engine is mixed');
  } else {
    const option = await page.$eval('#precision option[value="mixed"]', (o) => [o.disabled, o.textContent]);
    check(option[0] && option[1].includes('no shader-f16'), `mixed is offered only with shader-f16 (${option[1]})`);
  }
  // the optimizer: AdamW at its usual rate trains on WebGPU (its step count kernel and second
  // moments within the browser's limits) with a finite loss; its arithmetic is checked against
  // PyTorch's in the Rust tests (tests/optimizers.rs, tests/gradients.rs)
  await engineAfter(() => page.$eval('#opt', (el) => {
    document.getElementById('precision').value = 'fp32';
    el.value = 'adamw';
    el.dispatchEvent(new Event('change'));
  }));
  check(await page.evaluate(() => window.demo.engine.optimizer()) === 'adamw', 'the engine steps with AdamW');
  check((await page.inputValue('#lr')) === '0.001', 'AdamW sets its usual learning rate');
  check((await page.textContent('#status')).includes('with adamw'), 'the page says which optimizer');
  await click('#start');
  await page.waitForFunction(() => window.demo.history.length >= 6 || window.demo.errors.length > 0, null, poll);
  await click('#start');
  await page.evaluate(() => window.demo.busy);
  const adamw = await page.evaluate(() => ({ history: window.demo.history, errors: window.demo.errors }));
  check(adamw.errors.length === 0, `AdamW: no page errors (${adamw.errors.join('; ')})`);
  const losses = adamw.history.map((r) => r.loss);
  check(losses.length >= 6 && losses.every((l) => Number.isFinite(l) && l < 10),
    `AdamW trained ${losses.length} steps, every loss finite (${losses.map((l) => l.toFixed(3)).join(', ')})`);
  figures.adamw_losses = losses.map((l) => Number(l.toFixed(4)));
  check(consoleErrors.length === 0, `no console errors (${consoleErrors.join(' | ')})`);
  figures.total_seconds = (Date.now() - t0) / 1000;
} finally {
  await browser.close();
  server.close();
}
fs.writeFileSync(path.join(out, 'figures.json'), JSON.stringify(figures, null, 2));
console.log(`screenshot and figures in ${out}`);
if (failures > 0) {
  console.error(`${failures} browser check(s) failed`);
  process.exit(1);
}
