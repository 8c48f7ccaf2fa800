// DeViSE in the browser: photo -> word-space vector (the int8 ONNX model, onnxruntime-web
// on WASM), then cosine search over the vocabulary (tags), the class list (zero-shot label)
// and the gallery (text -> photos). Nothing leaves the device.
import * as ort from './ort/ort.wasm.bundle.min.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const S = {};  // the loaded tables, the InferenceSession and the last photo's embedding
const N_TAGS = 10, N_HITS = 8;

ort.env.wasm.numThreads = 1;  // threads need cross-origin isolation, which plain static servers lack
// The bundle holds the Emscripten glue; only the .wasm is fetched (a prefix string here
// would make it fetch the separate .mjs glue instead).
ort.env.wasm.wasmPaths = { wasm: new URL('./ort/ort-wasm-simd-threaded.wasm', import.meta.url).href };

function setState(state, msg) {
  document.body.dataset.state = state;
  $('status').textContent = msg;
}

// --- tables ------------------------------------------------------------------------------

const F16 = new Float32Array(65536);  // every float16 bit pattern as a float
for (let h = 0; h < 65536; h++) {
  const sign = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, f = h & 1023;
  F16[h] = e === 0 ? sign * f * 2 ** -24
    : e === 31 ? (f ? NaN : sign * Infinity) : sign * (1 + f / 1024) * 2 ** (e - 15);
}

async function fetchOk(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r;
}

function unitRows(m, dim) {
  for (let i = 0; i < m.length; i += dim) {
    let s = 0;
    for (let j = 0; j < dim; j++) s += m[i + j] * m[i + j];
    s = Math.sqrt(s) || 1;
    for (let j = 0; j < dim; j++) m[i + j] /= s;
  }
  return m;
}

async function matrix(url, dim) {  // float16 rows -> unit float32 rows (as read_f16 in Python)
  const half = new Uint16Array(await (await fetchOk(url)).arrayBuffer());
  return unitRows(Float32Array.from(half, (h) => F16[h]), dim);
}

const row = (m, i, dim) => m.subarray(i * dim, (i + 1) * dim);

function scores(m, v) {  // cosine of every unit row with unit v
  const dim = v.length, out = new Float32Array(m.length / dim);
  for (let i = 0; i < out.length; i++) {
    let s = 0;
    for (let j = 0; j < dim; j++) s += m[i * dim + j] * v[j];
    out[i] = s;
  }
  return out;
}

function topK(sc, k) {  // indices of the k best scores, best first (ties: lower index first)
  return Array.from(sc.keys()).sort((a, b) => sc[b] - sc[a] || a - b).slice(0, k);
}

// A word or class name -> unit vector, as WordVectors lookup in Python: the exact key
// (shipped class names first, then the vocabulary), else the unit mean of its parts.
function wordVector(name) {
  const dim = S.spec.dim;
  for (const key of [name.trim(), name.trim().toLowerCase()]) {
    if (S.classIndex.has(key)) return row(S.classVecs, S.classIndex.get(key), dim);
    if (S.vocabIndex.has(key)) return row(S.vocab, S.vocabIndex.get(key), dim);
  }
  const parts = name.toLowerCase().split(/[+_\s]+/).filter(Boolean);
  if (parts.length < 2) return null;
  const vs = parts.map(wordVector);
  if (vs.some((v) => !v)) return null;
  return meanUnit(vs);
}

function meanUnit(vs) {
  const m = new Float32Array(vs[0].length);
  for (const v of vs) for (let j = 0; j < m.length; j++) m[j] += v[j] / vs.length;
  return unitRows(m, m.length);
}

// --- preprocessing: torchvision Resize(size) + CenterCrop(size) + Normalize on a PIL image ---

// Pillow's bilinear resample coefficients (Resample.c: precompute_coeffs, then the 22-bit
// fixed point of normalize_coeffs_8bpc), so the page resizes exactly as Python does.
function coeffs(inSize, outSize) {
  const scale = inSize / outSize, filterscale = Math.max(scale, 1), support = filterscale;
  const ss = 1 / filterscale, ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2), kk = new Int32Array(outSize * ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    const w = new Float64Array(xmax);
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const t = Math.abs((x + xmin - center + 0.5) * ss);
      w[x] = t < 1 ? 1 - t : 0;
      ww += w[x];
    }
    for (let x = 0; x < xmax; x++) {
      const k = ww !== 0 ? w[x] / ww : w[x];
      kk[xx * ksize + x] = Math.trunc(k < 0 ? -0.5 + k * 4194304 : 0.5 + k * 4194304);
    }
    bounds[2 * xx] = xmin;
    bounds[2 * xx + 1] = xmax;
  }
  return { bounds, kk, ksize };
}

// Pillow's two passes over RGBA bytes (ImagingResampleHorizontal/Vertical_8bpc): each
// output byte is (sum of byte * coefficient + 2^21) >> 22, clipped to 0..255.
function horizontal(src, w, c, outW, first, rows) {
  const dst = new Uint8Array(outW * rows * 4);
  for (let y = 0; y < rows; y++) {
    const rowStart = (y + first) * w * 4;
    for (let x = 0; x < outW; x++) {
      const n = c.bounds[2 * x + 1], k0 = x * c.ksize;
      let p = rowStart + c.bounds[2 * x] * 4, r = 2097152, g = 2097152, b = 2097152;
      for (let t = 0; t < n; t++, p += 4) {
        const k = c.kk[k0 + t];
        r += src[p] * k; g += src[p + 1] * k; b += src[p + 2] * k;
      }
      const q = (y * outW + x) * 4;
      dst[q] = clip8(r); dst[q + 1] = clip8(g); dst[q + 2] = clip8(b);
    }
  }
  return dst;
}

function vertical(src, w, c, outH) {
  const dst = new Uint8Array(w * outH * 4), stride = w * 4;
  for (let y = 0; y < outH; y++) {
    const n = c.bounds[2 * y + 1], k0 = y * c.ksize, start = c.bounds[2 * y] * stride;
    for (let x = 0; x < w; x++) {
      let p = start + x * 4, r = 2097152, g = 2097152, b = 2097152;
      for (let t = 0; t < n; t++, p += stride) {
        const k = c.kk[k0 + t];
        r += src[p] * k; g += src[p + 1] * k; b += src[p + 2] * k;
      }
      const q = (y * w + x) * 4;
      dst[q] = clip8(r); dst[q + 1] = clip8(g); dst[q + 2] = clip8(b);
    }
  }
  return dst;
}

const clip8 = (v) => (v <= 0 ? 0 : v >= 1073741824 ? 255 : v >> 22);

function pilResize(src, w, h, outW, outH) {  // ImagingResampleInner: horizontal, then vertical
  const inH = h, cv = coeffs(h, outH);
  if (outW !== w) {  // only the rows the vertical pass reads
    const first = cv.bounds[0], last = cv.bounds[2 * outH - 2] + cv.bounds[2 * outH - 1];
    for (let i = 0; i < outH; i++) cv.bounds[2 * i] -= first;
    src = horizontal(src, w, coeffs(w, outW), outW, first, last - first);
    w = outW;
  }
  return outH !== inH ? vertical(src, w, cv, outH) : src;
}

const roundHalfEven = (x) => (Math.abs(x % 1) === 0.5 ? 2 * Math.round(x / 2) : Math.round(x));

function preprocess(rgba, w, h, spec) {
  const size = spec.shape[3];
  const [rw, rh] = w <= h ? [size, Math.floor(size * h / w)] : [Math.floor(size * w / h), size];
  const px = rw === w && rh === h ? rgba : pilResize(rgba, w, h, rw, rh);
  const top = roundHalfEven((rh - size) / 2), left = roundHalfEven((rw - size) / 2);
  const x = new Float32Array(3 * size * size);
  const mean = spec.mean.map(Math.fround), std = spec.std.map(Math.fround);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < size; y++) {
      for (let xx = 0; xx < size; xx++) {  // float32 steps, as ToTensor then Normalize
        const v = Math.fround(px[((y + top) * rw + xx + left) * 4 + c] / 255);
        x[(c * size + y) * size + xx] = Math.fround(v - mean[c]) / std[c];
      }
    }
  }
  return x;
}

// --- the model ---------------------------------------------------------------------------

async function decode(blob) {  // raw RGBA, no colour management (as Pillow ignores ICC profiles)
  const bmp = await createImageBitmap(blob, { colorSpaceConversion: 'none',
                                              premultiplyAlpha: 'none' });
  const cv = document.createElement('canvas');
  cv.width = bmp.width; cv.height = bmp.height;
  const ctx = cv.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(bmp, 0, 0);
  bmp.close();
  return { rgba: ctx.getImageData(0, 0, cv.width, cv.height).data, w: cv.width, h: cv.height };
}

async function embed(blob) {
  const t0 = performance.now();
  const img = await decode(blob);
  const t1 = performance.now();
  const x = preprocess(img.rgba, img.w, img.h, S.spec.input);
  const t2 = performance.now();
  const size = S.spec.input.shape[3];
  const out = await S.session.run({ [S.spec.input.name]:
    new ort.Tensor('float32', x, [1, 3, size, size]) });
  const t3 = performance.now();
  const emb = out[S.spec.output.name].data;
  return { emb, input: x, width: img.w, height: img.h,
           times: { decode_ms: t1 - t0, preprocess_ms: t2 - t1, infer_ms: t3 - t2,
                    total_ms: t3 - t0 } };
}

// --- the page ----------------------------------------------------------------------------

function showList(ol, items) {  // [name, score] pairs with a bar
  ol.replaceChildren(...items.map(([name, s]) => {
    const li = document.createElement('li');
    li.dataset.word = name; li.dataset.score = s.toFixed(6);
    li.innerHTML = '<span class="w"></span><span class="bar"></span><span class="s"></span>';
    li.children[0].textContent = name;
    li.children[1].style.width = `${Math.max(0, s) * 100}%`;
    li.children[2].textContent = s.toFixed(3);
    return li;
  }));
}

function classList() {
  return $('classes').value.split(/[,\n]+/).map((c) => c.trim()).filter(Boolean);
}

function label() {
  if (!S.unit) return;
  const names = classList(), known = names.filter((n) => wordVector(n));
  const missing = names.filter((n) => !wordVector(n));
  $('classes-note').textContent = missing.length ? `no vector for: ${missing.join(', ')}` : '';
  if (!known.length) { $('label').textContent = '-'; showList($('ranking'), []); return; }
  const sc = known.map((n) => [n, scores(wordVector(n), S.unit)[0]]);
  sc.sort((a, b) => b[1] - a[1]);
  $('label').textContent = sc[0][0];
  showList($('ranking'), sc.slice(0, 5));
  S.result.labels = sc;
}

function search() {
  const words = $('query').value.toLowerCase().split(/\s+/)
    .map((w) => w.replace(/^[.,;:!?"'()[\]]+|[.,;:!?"'()[\]]+$/g, ''))
    .filter((w) => w && !S.stop.has(w));
  const missing = words.filter((w) => !wordVector(w));
  $('hits').replaceChildren();
  $('query-note').textContent = missing.length ? `no vector for: ${missing.join(', ')}` : '';
  if (!words.length || missing.length) return;
  const q = meanUnit(words.map(wordVector)), sc = scores(S.gallery, q);
  $('hits').replaceChildren(...topK(sc, N_HITS).map((i) => {
    const it = S.spec.gallery.items[i], fig = document.createElement('figure');
    fig.dataset.index = i;
    fig.innerHTML = '<img alt=""><figcaption></figcaption>';
    fig.firstChild.src = it.thumb;
    fig.lastChild.textContent = `${it.label} ${sc[i].toFixed(2)}`;
    return fig;
  }));
}

async function show(blob) {
  setState('busy', 'running the model...');
  $('photo').src = URL.createObjectURL(blob);
  const r = await embed(blob);
  S.unit = unitRows(Float32Array.from(r.emb), r.emb.length);
  const sc = scores(S.vocab, S.unit);
  const tags = topK(sc, N_TAGS).map((i) => [S.words[i], sc[i]]);
  showList($('tags'), tags);
  S.result = { tags, embedding: Array.from(r.emb), size: [r.width, r.height],
               times: r.times, runs: [r.times] };
  S.lastInput = r.input;
  label();
  const repeat = Number(params.get('repeat') || 0);  // timing: embed the same photo again
  for (let i = 0; i < repeat; i++) S.result.runs.push((await embed(blob)).times);
  const t = r.times, again = S.result.runs.slice(1).map((x) => x.total_ms).sort((a, b) => a - b);
  $('timing').textContent = `${t.total_ms.toFixed(0)} ms on this device (model ` +
    `${t.infer_ms.toFixed(0)} ms, decode ${t.decode_ms.toFixed(0)} ms, resize ` +
    `${t.preprocess_ms.toFixed(0)} ms)` + (again.length ? `; the same photo again: ` +
    `${again[again.length >> 1].toFixed(0)} ms (median of ${again.length})` : '');
  window.demoResult = S.result;
  setState('done', `${r.width} x ${r.height} photo`);
}

async function init() {
  S.spec = await (await fetchOk('demo.json')).json();
  const dim = S.spec.dim;
  S.words = (await (await fetchOk(S.spec.vocab.words)).text()).split('\n').filter(Boolean);
  S.vocabIndex = new Map(S.words.map((w, i) => [w, i]));
  S.classIndex = new Map(S.spec.classes.names.map((w, i) => [w, i]));
  S.stop = new Set(S.spec.stop_words);
  [S.vocab, S.classVecs, S.gallery, S.session] = await Promise.all([
    matrix(S.spec.vocab.vectors, dim), matrix(S.spec.classes.vectors, dim),
    matrix(S.spec.gallery.vectors, dim),
    ort.InferenceSession.create(S.spec.model, { executionProviders: ['wasm'] })]);
  $('classes').value = (params.get('classes') || S.spec.classes.names.join(', '));
  $('query').value = params.get('q') || '';
  $('file').addEventListener('change', (e) => e.target.files[0] && run(e.target.files[0]));
  const drop = $('drop');
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault(); drop.classList.remove('over');
    if (e.dataTransfer.files[0]) run(e.dataTransfer.files[0]);
  });
  $('classes').addEventListener('input', label);
  $('query').addEventListener('input', search);
  window.demo = S;
  setState('ready', `${S.words.length} words, ${S.spec.gallery.items.length} gallery photos`);
  search();
  if (params.get('photo')) await run(fetchOk(params.get('photo')).then((r) => r.blob()));
}

async function run(blob) {
  try { await show(await blob); } catch (e) { setState('error', `error: ${e.message || e}`); }
}

init().catch((e) => setState('error', `could not start: ${e.message || e}`));
