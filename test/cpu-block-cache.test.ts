/**
 * The cache of large CPU blocks (cpp/runtime/cpu_allocator.cc): CPU tensors of 32 MiB and more reuse the blocks of freed
 * tensors of the same rounded size, up to a limit; smaller ones come from malloc's heap and are not counted.
 */
import { spawnSync } from 'child_process';
import * as path from 'path';
import * as bce from '../lib';

const MiB = 2 ** 20;
const linux = process.platform === 'linux';
// The cache keeps blocks only on Linux (elsewhere the addon's allocator passes large buffers to malloc).
const onLinux = linux ? test : test.skip;

/** A float32 tensor of exactly `mib` MiB. */
function tensorOf(mib: number, fill: 'zeros' | 'ones' = 'ones'): bce.Tensor {
  return bce[fill]([mib, MiB / 4]);
}

describe('cpuBlockCache', () => {
  let savedLimit = 0;
  beforeAll(() => {
    savedLimit = bce.cpuBlockCache.info().limit;
  });
  beforeEach(() => {
    bce.cpuBlockCache.setLimit(1024 * MiB);
    bce.cpuBlockCache.empty();
  });
  afterAll(() => {
    bce.cpuBlockCache.setLimit(savedLimit);
  });

  test('is on by default, with a limit of at most 1 GiB', () => {
    const info = bce.cpuBlockCache.info();
    expect(info.enabled).toBe(true);
    expect(savedLimit).toBeGreaterThan(0);
    expect(savedLimit).toBeLessThanOrEqual(1024 * MiB);
  });

  onLinux('a freed large tensor is kept, and the next one of that size takes it', () => {
    const a = tensorOf(40);
    expect(bce.cpuBlockCache.info()).toMatchObject({ bytes: 0, blocks: 0 });
    a.dispose();
    expect(bce.cpuBlockCache.info()).toMatchObject({ bytes: 40 * MiB, blocks: 1 });
    const b = tensorOf(40, 'zeros');
    expect(bce.cpuBlockCache.info()).toMatchObject({ bytes: 0, blocks: 0 });
    // The reused block held ones; zeros() still writes every element.
    expect(b.sum().item()).toBe(0);
    b.dispose();
  });

  onLinux('sizes round up to 2 MiB; another rounded size gets a block of its own', () => {
    const odd = bce.ones([33 * MiB + 4], { dtype: 'uint8' }); // 33 MiB + 4 bytes -> a 34 MiB block
    odd.dispose();
    expect(bce.cpuBlockCache.info()).toMatchObject({ bytes: 34 * MiB, blocks: 1 });
    const other = tensorOf(36);
    expect(bce.cpuBlockCache.info()).toMatchObject({ bytes: 34 * MiB, blocks: 1 });
    const same = bce.ones([34 * MiB - 100], { dtype: 'uint8' }); // rounds to 34 MiB too
    expect(bce.cpuBlockCache.info()).toMatchObject({ bytes: 0, blocks: 0 });
    other.dispose();
    same.dispose();
    expect(bce.cpuBlockCache.info()).toMatchObject({ bytes: 70 * MiB, blocks: 2 });
  });

  onLinux('tensors under 32 MiB are not cached', () => {
    const small = tensorOf(31);
    small.dispose();
    expect(bce.cpuBlockCache.info()).toMatchObject({ bytes: 0, blocks: 0 });
  });

  onLinux('the limit keeps the most recently freed blocks; setLimit and empty() give the rest back', () => {
    bce.cpuBlockCache.setLimit(100 * MiB);
    const [a, b, c] = [tensorOf(40), tensorOf(42), tensorOf(44)];
    a.dispose();
    b.dispose();
    c.dispose(); // 126 MiB freed: a, the least recently freed, goes back
    expect(bce.cpuBlockCache.info()).toMatchObject({ bytes: 86 * MiB, blocks: 2, limit: 100 * MiB });
    bce.cpuBlockCache.setLimit(50 * MiB); // keeps c only
    expect(bce.cpuBlockCache.info()).toMatchObject({ bytes: 44 * MiB, blocks: 1 });
    bce.cpuBlockCache.empty();
    expect(bce.cpuBlockCache.info()).toMatchObject({ bytes: 0, blocks: 0 });
    bce.cpuBlockCache.setLimit(0);
    tensorOf(40).dispose();
    expect(bce.cpuBlockCache.info()).toMatchObject({ bytes: 0, blocks: 0, limit: 0 });
  });

  onLinux('training steps on reused blocks give the same loss and gradient as on fresh memory', () => {
    bce.manualSeed(3);
    // 2x19x512x512 float32 logits: 38 MiB, so the logits, log-softmax and gradients are all large blocks.
    const logits = bce.randn([2, 19, 512, 512]);
    const target = bce.randint(0, 19, [2, 512, 512]);
    const step = (impl: 'reference' | 'fused') => {
      const x = logits.detach();
      x.requiresGrad = true;
      const loss = bce.bootstrappedCrossEntropy(x, target, 0, 0.25, { impl });
      loss.backward();
      const result = { loss: loss.item(), grad: x.grad!.toArray() as Float32Array };
      loss.dispose();
      x.dispose();
      return result;
    };
    bce.cpuBlockCache.setLimit(0); // every block fresh
    const fresh = step('reference');
    bce.cpuBlockCache.setLimit(1024 * MiB);
    step('reference');
    expect(bce.cpuBlockCache.info().blocks).toBeGreaterThanOrEqual(2); // log-softmax and gradient blocks kept
    const reused = step('reference');
    expect(reused.loss).toBe(fresh.loss);
    expect(Buffer.from(reused.grad.buffer).equals(Buffer.from(fresh.grad.buffer))).toBe(true);
    // The fused kernel's gradient block is reused too, and agrees with the reference path.
    step('fused');
    const fused = step('fused');
    expect(Math.abs(fused.loss - fresh.loss)).toBeLessThan(1e-6 * Math.abs(fresh.loss));
    const k = Math.floor(0.25 * 2 * 512 * 512); // gradients are (softmax - onehot) / k: within float rounding of it
    let worst = 0;
    for (let i = 0; i < fused.grad.length; i++) worst = Math.max(worst, Math.abs(fused.grad[i] - fresh.grad[i]));
    expect(worst).toBeLessThan(4e-6 / k);
    logits.dispose();
    target.dispose();
  });

  test("BOOTSTRAPPED_CE_CPU_ALLOCATOR=default (a child process) keeps LibTorch's allocator and nothing is cached", () => {
    const script = [
      "const bce = require('./lib');",
      'const before = bce.cpuBlockCache.info();',
      'bce.ones([40, 262144]).dispose();',
      "console.log('CACHE ' + JSON.stringify({ before, after: bce.cpuBlockCache.info() }));",
    ].join('\n');
    const child = spawnSync(process.execPath, ['-r', 'ts-node/register/transpile-only', '-e', script], {
      cwd: path.join(__dirname, '..'),
      env: { ...process.env, BOOTSTRAPPED_CE_CPU_ALLOCATOR: 'default' },
      encoding: 'utf8',
      timeout: 120000,
    });
    const line = child.stdout.split('\n').find((l) => l.startsWith('CACHE '));
    if (line === undefined) throw new Error(`child failed: status ${child.status}\n${child.stderr.slice(-4000)}`);
    const { before, after } = JSON.parse(line.slice(6));
    expect(before).toMatchObject({ enabled: false, bytes: 0 });
    expect(after).toMatchObject({ enabled: false, bytes: 0, blocks: 0 });
  });
});
