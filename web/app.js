// The demo page: trains a CIFAR ResNet on the bundled subset, draws the curves, classifies test
// images and the user's own, and exchanges safetensors weights with the CLI. All math runs in the
// Rust engine (pkg/resnet_web.js, built by web/build.sh) on WebGPU.
import init, { Engine } from './pkg/resnet_web.js';

const $ = (id) => document.getElementById(id);
const IMAGE = 3 * 32 * 32;
const GRID = 24;          // test images shown with their predictions
const TEST_EVERY = 25;    // steps between test-set evaluations
// The kernel choices tune() measured on this adapter, kept for the next visit.
const CHOICES_KEY = 'resnet-wgpu kernel choices';
const CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];

// Everything the page knows; exposed as window.demo for the browser test.
const demo = {
  engine: null,
  running: false,
  train: null,
  test: null,
  history: [],      // {step, loss, acc, ips}
  testAcc: [],      // {step, acc}
  errors: [],
  firstStepSeconds: null,
  loaded: performance.now(),
  busy: Promise.resolve(),
};
window.demo = demo;

function status(text) { $('status').textContent = text; }

function fail(e) {
  const msg = e && e.message ? e.message : String(e);
  demo.errors.push(msg);
  demo.running = false;
  $('start').textContent = 'Start';
  status(`error: ${msg}`);
}

// CIFAR-10 binary records: 1 label byte, then 1024 R, 1024 G, 1024 B bytes.
async function loadRecords(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  const bytes = new Uint8Array(await r.arrayBuffer());
  const n = bytes.length / (IMAGE + 1);
  if (!Number.isInteger(n) || n === 0) throw new Error(`${url}: not whole CIFAR-10 records`);
  const labels = new Uint8Array(n);
  const pixels = new Uint8Array(n * IMAGE);
  for (let i = 0; i < n; i++) {
    const o = i * (IMAGE + 1);
    labels[i] = bytes[o];
    pixels.set(bytes.subarray(o + 1, o + 1 + IMAGE), i * IMAGE);
  }
  return { n, labels, pixels };
}

// A seeded permutation per epoch, so runs repeat (xorshift32).
function permutation(n, seed) {
  let s = (seed * 2654435761) >>> 0 || 1;
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    const j = s % (i + 1);
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

function chwToImageData(chw) {
  const img = new ImageData(32, 32);
  for (let p = 0; p < 1024; p++) {
    img.data[4 * p] = chw[p];
    img.data[4 * p + 1] = chw[1024 + p];
    img.data[4 * p + 2] = chw[2048 + p];
    img.data[4 * p + 3] = 255;
  }
  return img;
}

function thumbnail(chw) {
  const c = document.createElement('canvas');
  c.width = c.height = 32;
  c.getContext('2d').putImageData(chwToImageData(chw), 0, 0);
  return c;
}

async function newEngine(make) {
  demo.running = false;
  $('start').textContent = 'Start';
  await demo.busy;
  const t0 = performance.now();
  status('building the model and compiling shaders…');
  const engine = await make();
  demo.engine = engine;
  demo.history = [];
  demo.testAcc = [];
  $('adapter').textContent = `WebGPU adapter: ${demo.adapterInfo}; engine: ${engine.adapter()}`;
  $('model').value = engine.modelName();
  $('batch').value = String(engine.batchSize());
  status(`${engine.modelName()} with ${engine.optimizer()}: ${engine.paramCount().toLocaleString()} parameters, ready ` +
    `(${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  for (const b of ['start', 'reset', 'save', 'tune']) $(b).disabled = false;
  drawChart();
  await refreshGrid(false);
}

// The kernel choices of an earlier visit (the engine uses them if they are of this adapter).
function remembered() {
  try { return localStorage.getItem(CHOICES_KEY) || undefined; } catch { return undefined; }
}

function freshEngine() {
  return Engine.create($('model').value, Number($('batch').value), 1, $('kernels').value, remembered(),
    $('precision').value, $('opt').value);
}

// Each optimizer's usual learning rate at these batch sizes (SGD's is He et al.'s).
const USUAL_LR = { sgd: 0.1, sgd_nesterov: 0.1, rmsprop: 0.01, adamw: 0.001 };

// Times every kernel family at this model's convolution shapes (once per adapter and shape).
async function tuneKernels() {
  const t0 = performance.now();
  status('timing every kernel family at every convolution shape of this model…');
  const timed = await demo.engine.tune();
  // a forced family times nothing: keep what an earlier auto session measured
  if ($('kernels').value === 'auto') {
    try { localStorage.setItem(CHOICES_KEY, demo.engine.kernelChoices()); } catch { /* no storage */ }
  }
  $('adapter').textContent = `WebGPU adapter: ${demo.adapterInfo}; engine: ${demo.engine.adapter()}`;
  status(`kernels tuned: ${timed} convolution shapes timed in ${((performance.now() - t0) / 1000).toFixed(1)} s, ` +
    'the fastest kept and remembered in this browser');
}

async function trainLoop() {
  const e = demo.engine;
  const B = e.batchSize();
  const px = new Uint8Array(B * IMAGE);
  const lb = new Uint32Array(B);
  const { n, labels, pixels } = demo.train;
  const perEpoch = Math.floor(n / B);
  while (demo.running && e === demo.engine) {
    const lr = Number($('lr').value);
    if (!(lr > 0)) throw new Error(`learning rate ${$('lr').value} is not a positive number`);
    const it = e.iteration();
    const order = permutation(n, Math.floor(it / perEpoch) + 1);
    const base = (it % perEpoch) * B;
    for (let k = 0; k < B; k++) {
      const i = order[base + k];
      px.set(pixels.subarray(i * IMAGE, (i + 1) * IMAGE), k * IMAGE);
      lb[k] = labels[i];
    }
    const t0 = performance.now();
    e.step(px, lb, lr);
    const m = await e.metrics(); // waits for this step on the GPU
    const secs = (performance.now() - t0) / 1000;
    if (demo.firstStepSeconds === null) {
      demo.firstStepSeconds = (performance.now() - demo.loaded) / 1000;
    }
    if (m[3] > 0 || !Number.isFinite(m[0])) {
      throw new Error(`the loss diverged at step ${e.iteration()}; lower the learning rate and start a new model`);
    }
    const row = { step: e.iteration(), loss: m[0] / m[2], acc: m[1] / m[2], ips: B / secs };
    demo.history.push(row);
    const recent = demo.history.slice(-10);
    const ips = recent.length / recent.reduce((s, r) => s + 1 / r.ips, 0);
    status(`step ${row.step} (epoch ${(row.step / perEpoch).toFixed(1)}): loss ${row.loss.toFixed(3)}, ` +
      `accuracy ${(100 * row.acc).toFixed(1)}%, ${ips.toFixed(1)} images/s`);
    drawChart();
    if (row.step % TEST_EVERY === 0) await refreshGrid(true);
  }
}

async function evaluate(count) {
  const { labels, pixels } = demo.test;
  const probs = await demo.engine.predict(pixels.slice(0, count * IMAGE));
  const k = probs.length / count;
  const top = [];
  let correct = 0;
  for (let i = 0; i < count; i++) {
    let best = 0;
    for (let j = 1; j < k; j++) if (probs[i * k + j] > probs[i * k + best]) best = j;
    top.push(best);
    if (best === labels[i]) correct++;
  }
  return { top, acc: correct / count };
}

// Predictions for the grid; with `full`, over the whole test subset for the chart's test accuracy
// (a few seconds on a CPU adapter, so not before the first training step).
async function refreshGrid(full) {
  const e = demo.engine;
  const { top, acc } = await evaluate(full ? demo.test.n : GRID);
  if (e !== demo.engine) return;
  if (full) demo.testAcc.push({ step: e.iteration(), acc });
  const classes = e.classes();
  const grid = $('grid');
  grid.replaceChildren();
  for (let i = 0; i < GRID; i++) {
    const fig = document.createElement('figure');
    const right = top[i] === demo.test.labels[i];
    fig.className = right ? 'right' : 'wrong';
    fig.append(thumbnail(demo.test.pixels.subarray(i * IMAGE, (i + 1) * IMAGE)));
    const cap = document.createElement('figcaption');
    cap.textContent = classes[top[i]];
    cap.title = `true: ${classes[demo.test.labels[i]]}`;
    fig.append(cap);
    grid.append(fig);
  }
  drawChart();
}

function drawChart() {
  const c = $('chart');
  const g = c.getContext('2d');
  const W = c.width, H = c.height, L = 44, R = 44, T = 12, B = 26;
  g.clearRect(0, 0, W, H);
  g.font = '11px system-ui, sans-serif';
  g.strokeStyle = '#ccc';
  g.strokeRect(L, T, W - L - R, H - T - B);
  const h = demo.history;
  const steps = Math.max(10, h.length ? h[h.length - 1].step : 0);
  const maxLoss = Math.max(2.5, ...h.map((r) => r.loss));
  const x = (s) => L + (W - L - R) * s / steps;
  const yl = (v) => T + (H - T - B) * (1 - v / maxLoss);
  const ya = (v) => T + (H - T - B) * (1 - v);
  g.fillStyle = '#555';
  g.fillText('loss', 4, T + 8);
  g.fillText(maxLoss.toFixed(1), 4, T + 20);
  g.fillText('0', L - 12, H - B);
  g.fillText('100%', W - R + 4, T + 8);
  g.fillText('0%', W - R + 4, H - B);
  g.fillText(`step ${steps}`, W - R - 50, H - 8);
  const line = (pts, color, width) => {
    if (pts.length === 0) return;
    g.strokeStyle = color;
    g.lineWidth = width;
    g.beginPath();
    pts.forEach(([px, py], i) => (i ? g.lineTo(px, py) : g.moveTo(px, py)));
    g.stroke();
    if (pts.length === 1) g.strokeRect(pts[0][0] - 1, pts[0][1] - 1, 2, 2);
  };
  line(h.map((r) => [x(r.step), yl(r.loss)]), '#d9480f', 1.5);
  line(h.map((r) => [x(r.step), ya(r.acc)]), '#1c7ed6', 1);
  line(demo.testAcc.map((r) => [x(r.step), ya(r.acc)]), '#2b8a3e', 3);
  g.lineWidth = 1;
}

// The user's images: decoded by the browser, drawn at 32x32, laid out as CHW bytes.
async function toCHW(blob) {
  const bmp = await createImageBitmap(blob, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  const c = new OffscreenCanvas(32, 32);
  const g = c.getContext('2d', { willReadFrequently: true });
  g.imageSmoothingQuality = 'high';
  g.drawImage(bmp, 0, 0, 32, 32);
  const rgba = g.getImageData(0, 0, 32, 32).data;
  const chw = new Uint8Array(IMAGE);
  for (let p = 0; p < 1024; p++) {
    chw[p] = rgba[4 * p];
    chw[1024 + p] = rgba[4 * p + 1];
    chw[2048 + p] = rgba[4 * p + 2];
  }
  return chw;
}

async function classify(files) {
  const e = demo.engine;
  const items = [];
  for (const f of files) items.push({ name: f.name, chw: await toCHW(f) });
  if (items.length === 0) return;
  const all = new Uint8Array(items.length * IMAGE);
  items.forEach((it, i) => all.set(it.chw, i * IMAGE));
  const probs = await e.predict(all);
  const classes = e.classes();
  const k = classes.length;
  const out = $('results');
  out.replaceChildren();
  items.forEach((it, i) => {
    const p = Array.from(probs.subarray(i * k, (i + 1) * k));
    const order = p.map((v, j) => j).sort((a, b) => p[b] - p[a]).slice(0, 5);
    const div = document.createElement('div');
    div.className = 'result';
    div.dataset.image = it.name;
    div.dataset.top1 = classes[order[0]];
    const head = document.createElement('div');
    head.append(thumbnail(it.chw), document.createTextNode(` ${it.name}`));
    div.append(head);
    for (const j of order) {
      const row = document.createElement('div');
      row.className = 'bar';
      row.innerHTML = `<span class="name"></span><span class="fill" style="width:${(100 * p[j]).toFixed(1)}%"></span>` +
        `<span class="pct">${(100 * p[j]).toFixed(1)}%</span>`;
      row.querySelector('.name').textContent = classes[j];
      div.append(row);
    }
    out.append(div);
  });
}

// Serialises engine work that must not overlap a training step (classify, save, load).
function exclusive(task) {
  demo.busy = demo.busy.then(task).catch(fail);
  return demo.busy;
}

async function main() {
  if (!navigator.gpu) return noWebGPU('navigator.gpu is not defined.');
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) return noWebGPU('navigator.gpu.requestAdapter() found no adapter.');
  const info = adapter.info || {};
  demo.adapterInfo = [info.vendor, info.architecture, info.device, info.description]
    .filter((v) => v).join(' ') || 'unnamed';
  if (adapter.isFallbackAdapter) demo.adapterInfo += ' (software fallback)';
  // mixed precision needs f16 shaders; without them the page runs fp32 and says why
  demo.f16 = adapter.features.has('shader-f16');
  if (!demo.f16) {
    const mixed = $('precision').querySelector('option[value="mixed"]');
    mixed.disabled = true;
    mixed.textContent += ' (this adapter has no shader-f16)';
  }
  $('app').hidden = false;
  await init();
  [demo.train, demo.test] = await Promise.all([loadRecords('data/train.bin'), loadRecords('data/test.bin')]);
  $('data-info').textContent = `${demo.train.n} training and ${demo.test.n} test images of real CIFAR-10, ` +
    'with random crops and flips; by default SGD with momentum 0.9 and weight decay 1e-4 as in He et al. 2016.';

  $('start').onclick = () => {
    demo.running = !demo.running;
    $('start').textContent = demo.running ? 'Pause' : 'Start';
    if (demo.running) exclusive(trainLoop);
  };
  $('reset').onclick = () => newEngine(freshEngine).catch(fail);
  $('tune').onclick = () => {
    demo.running = false; // training pauses: the timings need the GPU to themselves
    $('start').textContent = 'Start';
    exclusive(tuneKernels);
  };
  for (const id of ['model', 'batch', 'kernels', 'precision']) $(id).onchange = $('reset').onclick;
  $('opt').onchange = () => {
    $('lr').value = String(USUAL_LR[$('opt').value]);
    $('reset').onclick();
  };
  $('files').onchange = (ev) => exclusive(() => classify([...ev.target.files]));
  const drop = $('drop');
  drop.ondragover = (ev) => { ev.preventDefault(); drop.classList.add('over'); };
  drop.ondragleave = () => drop.classList.remove('over');
  drop.ondrop = (ev) => {
    ev.preventDefault();
    drop.classList.remove('over');
    exclusive(() => classify([...ev.dataTransfer.files]));
  };
  for (const name of CLASSES) {
    const img = document.createElement('img');
    img.src = `data/samples/${name}.png`;
    img.alt = img.title = name;
    img.onclick = () => exclusive(async () => {
      const blob = await (await fetch(img.src)).blob();
      await classify([new File([blob], `${name}.png`)]);
    });
    $('samples').append(img);
  }
  $('save').onclick = () => exclusive(async () => {
    const bytes = await demo.engine.save();
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([bytes], { type: 'application/octet-stream' }));
    a.download = `${demo.engine.modelName()}-browser.safetensors`;
    a.click();
    URL.revokeObjectURL(a.href);
  });
  $('load').onchange = async (ev) => {
    const f = ev.target.files[0];
    if (!f) return;
    const bytes = new Uint8Array(await f.arrayBuffer());
    await newEngine(() => Engine.fromSafetensors(bytes, Number($('batch').value), $('kernels').value,
      remembered(), $('precision').value, $('opt').value))
      .catch(fail);
    status(`loaded ${f.name}: ${demo.engine.modelName()}`);
  };
  // every control has its handler before the first engine enables the buttons
  await newEngine(freshEngine);
}

function noWebGPU(why) {
  $('adapter').textContent = 'No WebGPU adapter.';
  $('nowebgpu-why').textContent = why;
  $('nowebgpu').hidden = false;
}

main().catch(fail);
