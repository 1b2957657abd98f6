/**
 * The addon in several worker_threads at once. A child process (so that a crash fails this test instead of
 * killing jest) starts four workers, each loading the library and running training steps (create, loss,
 * backward, dispose), while the main thread trains too; one worker is terminated mid-run. The process must
 * survive, the other workers finish with no live tensor and the right loss for a fixed input (computed here in
 * JavaScript), and a fresh worker still loads the addon afterwards.
 * A tensor posted to a worker arrives as a plain object without its native tensor and is refused with a
 * TypeError.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';
import { mulberry32 } from './helpers/prng';
import { keepCount, pixelLosses, randomLogits, topkIndices } from './helpers/reference';

const root = path.join(__dirname, '..');

/** Fixed (2, 5, 12) logits and labels; CHECK_EXPECTED is their loss at p = 0.25, computed here in JavaScript. */
const CHECK_LOGITS = randomLogits(mulberry32(21), 2, 5, 12);
const CHECK_LABELS = [0, 1].map((n) => Array.from({ length: 12 }, (_, s) => (3 * s + n) % 5));
const CHECK = { shape: [2, 5, 12], logits: CHECK_LOGITS.flat(2), labels: CHECK_LABELS.flat(), p: 0.25 };
const CHECK_EXPECTED = (() => {
  const losses = pixelLosses(CHECK_LOGITS, CHECK_LABELS).flat();
  const k = keepCount(CHECK.p, losses.length);
  return (
    topkIndices(
      losses,
      k,
      losses.map(() => true),
    ).reduce((a, i) => a + losses[i], 0) / k
  );
})();

/** The loss of fixed logits and labels (CHECK below), computed by the addon in a worker and in the main thread. */
const CHECK_LOSS = `
function checkLoss(b, check) {
  const input = b.tensor(check.logits, { shape: check.shape, dtype: 'float64' });
  const target = b.tensor(check.labels, { shape: [check.shape[0], check.shape[2]], dtype: 'int64' });
  const loss = b.bootstrappedCrossEntropy(input, target, 0, check.p);
  const value = loss.item();
  loss.dispose(); target.dispose(); input.dispose();
  return value;
}
`;

// Runs in each worker (plain JavaScript; the library is loaded through ts-node).
const WORKER = `${CHECK_LOSS}
const { parentPort, workerData } = require('worker_threads');
require('ts-node').register({ transpileOnly: true });
const b = require(workerData.lib);
const { native } = require(workerData.lib + '/native');
parentPort.on('message', (message) => {
  if (message.kind !== 'foreign') return;
  const target = b.randint(0, 3, [2, 4, 4]);
  try {
    b.bootstrappedCrossEntropy(message.input, target, 0, 0.5);
    parentPort.postMessage({ kind: 'foreign', accepted: true });
  } catch (error) {
    parentPort.postMessage({
      kind: 'foreign', accepted: false, name: error.name, message: error.message,
      arrivedAs: JSON.stringify(message.input), nativeDirect: (() => {
        try { native.bootstrappedCrossEntropy(message.input.handle, target.handle, {}); return 'accepted'; }
        catch (e) { return e.name + ': ' + e.message; }
      })(),
    });
  } finally {
    target.dispose();
  }
});
(async () => {
  const start = b.memory().tensors;
  let last = 0;
  for (let i = 0; i < workerData.steps; i++) {
    const input = b.randn([2, 19, 32, 32], { requiresGrad: true });
    const target = b.randint(0, 19, [2, 32, 32]);
    const loss = b.bootstrappedCrossEntropy(input, target, i, 0.25);
    loss.backward();
    const grad = input.grad;
    last = loss.item();
    grad.dispose(); loss.dispose(); target.dispose(); input.dispose();
    if (i % 5 === 0) {
      parentPort.postMessage({ kind: 'progress', steps: i + 1 });
      await new Promise(setImmediate);
    }
  }
  const check = checkLoss(b, workerData.check);
  parentPort.postMessage({ kind: 'done', steps: workerData.steps, loss: last, check, tensorsStart: start, tensorsEnd: b.memory().tensors });
  parentPort.close();
})().catch((error) => parentPort.postMessage({ kind: 'error', message: String(error && error.stack) }));
`;

// The child process: main thread plus workers; prints one JSON line.
const MAIN = `${CHECK_LOSS}
const { Worker } = require('worker_threads');
require('ts-node').register({ transpileOnly: true });
const lib = ${JSON.stringify(path.join(root, 'lib'))};
const check = ${JSON.stringify(CHECK)};
const b = require(lib);
const WORKER = ${JSON.stringify(WORKER)};
const result = { workers: {}, foreign: null, mainSteps: 0, errors: [] };

function start(id, steps) {
  const worker = new Worker(WORKER, { eval: true, workerData: { lib, steps, check } });
  const record = (result.workers[id] = { progress: 0, done: null, exitCode: null });
  const exited = new Promise((resolve) => worker.on('exit', (code) => { record.exitCode = code; resolve(); }));
  worker.on('error', (error) => result.errors.push(id + ': ' + error.message));
  worker.on('message', (m) => {
    if (m.kind === 'progress') record.progress = m.steps;
    else if (m.kind === 'done') record.done = m;
    else if (m.kind === 'foreign') result.foreign = m;
    else if (m.kind === 'error') result.errors.push(id + ': ' + m.message);
  });
  return { worker, record, exited };
}

function mainStep(i) {
  const input = b.randn([1, 19, 32, 32], { requiresGrad: true });
  const target = b.randint(0, 19, [1, 32, 32]);
  const loss = b.bootstrappedCrossEntropy(input, target, i, 0.25);
  loss.backward();
  input.grad.dispose(); loss.dispose(); target.dispose(); input.dispose();
}

(async () => {
  const tensorsStart = b.memory().tensors;
  const doomed = start('terminated', 1e9);
  const others = [1, 2, 3].map((n) => start('w' + n, 60));
  // A tensor of the main thread, posted to a worker.
  const mine = b.randn([2, 3, 4, 4]);
  others[0].worker.postMessage({ kind: 'foreign', input: mine });
  // Train on the main thread until the doomed worker is well into its run, then terminate it.
  for (let i = 0; doomed.record.progress < 10; i++) {
    mainStep(i);
    result.mainSteps++;
    await new Promise(setImmediate);
  }
  result.terminatedAt = doomed.record.progress;
  await doomed.worker.terminate();
  await Promise.all(others.map((o) => o.exited));
  // After the teardown of four environments, a fresh worker still loads and trains.
  const fresh = start('fresh', 10);
  await fresh.exited;
  for (let i = 0; i < 5; i++) mainStep(i);
  mine.dispose();
  result.mainCheck = checkLoss(b, check);
  result.tensorsStart = tensorsStart;
  result.tensorsEnd = b.memory().tensors;
  console.log('RESULT ' + JSON.stringify(result));
})().catch((error) => { console.log('RESULT ' + JSON.stringify({ fatal: String(error && error.stack) })); });
`;

describe('worker threads', () => {
  it('trains in four workers and the main thread, survives a terminated worker, refuses a posted tensor', () => {
    const child = spawnSync(process.execPath, ['-e', MAIN], { cwd: root, encoding: 'utf8', timeout: 90000 });
    const line = child.stdout.split('\n').find((l) => l.startsWith('RESULT '));
    const diagnostics = `status ${child.status} signal ${child.signal}\n${child.stdout}\n${child.stderr}`;
    expect({ status: child.status, signal: child.signal, reported: line !== undefined, diagnostics }).toEqual({
      status: 0,
      signal: null,
      reported: true,
      diagnostics,
    });
    const result = JSON.parse(line!.slice('RESULT '.length));
    expect(result.fatal).toBeUndefined();
    expect(result.errors).toEqual([]);

    // The terminated worker was mid-run; the others finished every step with no live tensor left.
    expect(result.terminatedAt).toBeGreaterThanOrEqual(10);
    expect(result.workers.terminated.done).toBeNull();
    expect(result.workers.terminated.exitCode).toBe(1);
    for (const id of ['w1', 'w2', 'w3', 'fresh']) {
      const w = result.workers[id];
      expect(w.exitCode).toBe(0);
      expect(w.done.steps).toBe(id === 'fresh' ? 10 : 60);
      expect(Number.isFinite(w.done.loss)).toBe(true);
      // The loss each worker computed for the fixed input is the value computed here.
      expect(Math.abs(w.done.check - CHECK_EXPECTED)).toBeLessThan(1e-12);
      expect(w.done.tensorsEnd).toBe(w.done.tensorsStart);
    }
    expect(result.mainSteps).toBeGreaterThan(0);
    expect(Math.abs(result.mainCheck - CHECK_EXPECTED)).toBeLessThan(1e-12);
    expect(result.tensorsEnd).toBe(result.tensorsStart);

    // The posted tensor arrived as { handle: {} }: refused by the facade and by the addon itself.
    expect(result.foreign).toEqual({
      kind: 'foreign',
      accepted: false,
      name: 'TypeError',
      message: expect.stringContaining('input must be a Tensor, got a copy of one without its native tensor'),
      arrivedAs: '{"handle":{}}',
      nativeDirect: 'TypeError: input must be a Tensor',
    });
  }, 100000);
});
