/**
 * Distributed training: ranks started by bin/bootstrapped-ce-run.js on 127.0.0.1 (free ports chosen here) run
 * test/fixtures/distributed-worker.ts; their results are compared with values computed by hand or in this one
 * process on the concatenated batch: collectives, the global top-k (selection, loss and gradients, with ties,
 * ignored pixels and class weights), data-parallel training against single-process training, the launcher's
 * failure handling and the timeouts.
 */
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import * as bce from '../lib';
import { CLASS_WEIGHTS, IGNORE, lossBatch, trainingBatch } from './helpers/distributed-data';

const ROOT = path.join(__dirname, '..');
const LAUNCHER = path.join(ROOT, 'bin', 'bootstrapped-ce-run.js');
const WORKER = path.join(__dirname, 'fixtures', 'distributed-worker.ts');
const MODEL = path.join(ROOT, 'models', 'segnet.pt');

jest.setTimeout(240000);

const available = bce.distributed.isAvailable();
const describeIfAvailable = available ? describe : describe.skip;
if (!available) {
  // Said once, so that a skipped suite is never silent about why.
  console.warn(`distributed tests skipped: ${bce.distributed.unavailableReason()}`);
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

interface Launch {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
  results: Array<Record<string, unknown>>;
}

async function launch(nproc: number, args: string[], extraLauncherArgs: string[] = []): Promise<Launch> {
  const port = await freePort();
  const started = Date.now();
  const resultDir = fs.mkdtempSync(path.join(os.tmpdir(), 'bce-dist-'));
  const child = spawn(
    process.execPath,
    [LAUNCHER, '--nproc-per-node', String(nproc), '--master-port', String(port), ...extraLauncherArgs, WORKER, ...args],
    {
      cwd: ROOT,
      env: {
        ...process.env,
        MASTER_ADDR: '127.0.0.1',
        DISTRIBUTED_TEST_SYNC_DIR: resultDir,
      },
    },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk) => (stdout += chunk));
  child.stderr.on('data', (chunk) => (stderr += chunk));
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  // Each rank writes its results to files (see distributed-worker.ts), in rank order here.
  const results = fs
    .readdirSync(resultDir)
    .filter((name) => /^result-\d+-\d+\.json$/.test(name))
    .map((name) => JSON.parse(fs.readFileSync(path.join(resultDir, name), 'utf8')) as Record<string, unknown>)
    .sort((a, b) => (a.rank as number) - (b.rank as number));
  fs.rmSync(resultDir, { recursive: true, force: true });
  return { code, stdout, stderr, ms: Date.now() - started, results };
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

function list(t: bce.Tensor): number[] {
  return Array.from(t.toArray() as ArrayLike<number>, Number);
}

describe('distributed without a process group', () => {
  test('isAvailable and unavailableReason agree', () => {
    expect(typeof bce.distributed.isAvailable()).toBe('boolean');
    expect(bce.distributed.unavailableReason() === '').toBe(bce.distributed.isAvailable());
  });

  test('collectives and scope global before initProcessGroup are clear errors', async () => {
    expect(bce.distributed.isInitialized()).toBe(false);
    await expect(bce.distributed.allReduce(bce.tensor([1]))).rejects.toThrow(/initProcessGroup/);
    expect(() => bce.distributed.getRank()).toThrow(/initProcessGroup/);
    const input = bce.randn([1, 3, 4]);
    const target = bce.zeros([1, 4], { dtype: 'int64' });
    expect(() => bce.bootstrappedCrossEntropy(input, target, 0, 0.5, { scope: 'global' })).toThrow(/initProcessGroup/);
  });

  test('bad options are refused, naming the option', async () => {
    const init = bce.distributed.initProcessGroup;
    await expect(init({ rank: 0, worldSize: 2, masterPort: 0 })).rejects.toThrow(RangeError);
    await expect(init({ rank: 2, worldSize: 2, masterPort: 29500 })).rejects.toThrow(/rank must be in \[0, worldSize/);
    await expect(init({ rank: 0, worldSize: 0 })).rejects.toThrow(/worldSize/);
    await expect(init({ rank: 0, worldSize: 1, backend: 'mpi' as never })).rejects.toThrow(/backend must be one of/);
    await expect(init({ rank: 0, worldSize: 1, timeoutMs: 0 })).rejects.toThrow(/timeoutMs/);
    await expect(init({ rank: 0, worldSize: 1, rnak: 0 } as never)).rejects.toThrow(/rnak/);
    const saved = { RANK: process.env.RANK, WORLD_SIZE: process.env.WORLD_SIZE };
    delete process.env.RANK;
    delete process.env.WORLD_SIZE;
    try {
      await expect(init({ worldSize: 1 })).rejects.toThrow(/RANK is not set/);
    } finally {
      Object.assign(process.env, saved);
    }
    expect(() =>
      bce.bootstrappedCrossEntropy(bce.randn([1, 3, 4]), bce.zeros([1, 4], { dtype: 'int64' }), 0, 0.5, {
        scope: 'everywhere' as never,
      }),
    ).toThrow(/scope must be one of/);
  });

  (available ? test : test.skip)(
    "backend 'nccl' is a clear error (CUDA missing, or NCCL not in this build)",
    async () => {
      await expect(
        bce.distributed.initProcessGroup({ backend: 'nccl', rank: 0, worldSize: 1, masterPort: await freePort() }),
      ).rejects.toThrow(bce.cuda.isAvailable() ? /not in this build/ : /needs CUDA/);
    },
  );

  (available ? test : test.skip)(
    'a rank that never comes ends the rendezvous in a clear error after timeoutMs',
    async () => {
      const started = Date.now();
      await expect(
        bce.distributed.initProcessGroup({ rank: 0, worldSize: 2, masterPort: await freePort(), timeoutMs: 1500 }),
      ).rejects.toThrow(/rank 0 of 2 could not join the group at 127\.0\.0\.1:\d+ within 1500 ms/);
      expect(Date.now() - started).toBeLessThan(15000);
      expect(bce.distributed.isInitialized()).toBe(false);
    },
  );

  (available ? test : test.skip)(
    'a group of one: collectives are identities; the global loss is the process loss',
    async () => {
      const group = await bce.distributed.initProcessGroup({ rank: 0, worldSize: 1, masterPort: await freePort() });
      try {
        const t = bce.tensor([1, -2, 3]);
        await group.allReduce(t, 'avg');
        expect(list(t)).toEqual([1, -2, 3]);
        expect((await group.allGather(t)).map(list)).toEqual([[1, -2, 3]]);
        await expect(group.broadcast(t, 1)).rejects.toThrow(/src must be a rank in \[0, 1\)/);
        await expect(group.allReduce(t, 'mean' as never)).rejects.toThrow(/op must be one of/);
        const batch = lossBatch(3, 2, 5, 7, { ties: false, ignoreRate: 0.2 });
        const input = bce.tensor(batch.logits, { shape: batch.shape });
        const target = bce.tensor(batch.labels, { shape: [2, 5, 7], dtype: 'int64' });
        const weight = bce.tensor(CLASS_WEIGHTS);
        const options = { ignoreIndex: IGNORE, weight };
        const global = bce.bootstrappedCrossEntropyWithStats(input, target, 0, 0.3, { ...options, scope: 'global' });
        const local = bce.bootstrappedCrossEntropyWithStats(input, target, 0, 0.3, { ...options, impl: 'reference' });
        expect(global.loss.item()).toBeCloseTo(local.loss.item(), 5);
        expect([global.k, global.nValid]).toEqual([local.k, local.nValid]);
        expect(global.communication?.rounds).toBeGreaterThanOrEqual(1);
        expect(() => bce.bootstrappedCrossEntropy(input, target, 0, 0.3, { scope: 'global', perSample: true })).toThrow(
          /perSample/,
        );
      } finally {
        bce.distributed.destroyProcessGroup();
      }
      expect(bce.distributed.isInitialized()).toBe(false);
      expect(() => group.barrierSync()).toThrow(/destroyed/);
    },
  );
});

describeIfAvailable.each([2, 3])('collectives across %i ranks', (world) => {
  test('allReduce, broadcast, allGather and barrier give the hand-computed values', async () => {
    const run = await launch(world, ['collectives']);
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: '' });
    expect(run.results).toHaveLength(world);
    const ranks = [...Array(world).keys()];
    const total = (f: (r: number) => number) => ranks.reduce((s, r) => s + f(r), 0);
    for (const result of run.results) {
      expect(result.sum).toEqual([total((r) => r + 1), total((r) => 2 * (r + 1)), -total((r) => r)]);
      expect(result.max).toEqual([world - 1, 0]);
      expect(result.min).toEqual([0, -(world - 1)]);
      expect(result.avg).toEqual([total((r) => r) / world, 1]);
      expect(result.product).toEqual([ranks.reduce((p, r) => p * (r + 2), 1)]);
      expect(result.syncSum).toEqual([total((r) => r + 1)]);
      expect(result.broadcast).toEqual([(world - 1) * 10 + 1, (world - 1) * 10 + 2]);
      expect(result.allGather).toEqual(ranks.map((r) => [r, r * r]));
      expect(result.allGatherSync).toEqual(ranks.map((r) => [r]));
      // Rank 0 waited ~600 ms for the others at the barrier; a 10 ms timer kept firing meanwhile.
      // (A blocked loop would give 0 or 1; the bound leaves room for a busy machine.)
      if (result.rank === 0) expect(result.ticksWhileWaiting as number).toBeGreaterThan(5);
      expect(result.afterDestroy).toMatch(/initProcessGroup/);
    }
  });
});

/** The single-process truth on the whole batch: per-pixel losses (plain cross-entropy), a stable sort. */
function expectedGlobal(
  world: number,
  ties: boolean,
  ignoreRate: number,
  p: number,
  reduction: 'mean' | 'sum' | 'none',
  weighted: boolean,
  float64: boolean,
) {
  const dtype = float64 ? 'float64' : 'float32';
  const batch = lossBatch(7, 2 * world, 6, 5, { ties, ignoreRate, float64 });
  const input = bce.tensor(batch.logits, { shape: batch.shape, dtype, requiresGrad: true });
  const target = bce.tensor(batch.labels, { shape: [2 * world, 6, 5], dtype: 'int64' });
  const weight = weighted ? bce.tensor(CLASS_WEIGHTS, { dtype }) : undefined;
  const perPixel = bce.crossEntropy(input, target, { weight, ignoreIndex: IGNORE, reduction: 'none' });
  const losses = list(perPixel.detach());
  const valid = [...batch.labels.keys()].filter((i) => batch.labels[i] !== IGNORE);
  // Largest first; equal losses in (rank, pixel) order, which is the flat index order of the whole batch.
  const order = valid.slice().sort((a, b) => losses[b] - losses[a] || a - b);
  const k = Math.min(Math.max(Math.floor(p * valid.length + 1e-9), 1), valid.length);
  const mask = new Float64Array(losses.length);
  for (const i of order.slice(0, k)) mask[i] = 1;
  let denominator = k;
  if (weighted) denominator = order.slice(0, k).reduce((s, i) => s + CLASS_WEIGHTS[batch.labels[i]], 0);
  const selected = perPixel.mul(bce.tensor(mask, { shape: perPixel.shape, dtype }));
  const loss = reduction === 'mean' ? selected.sum().div(denominator) : selected.sum();
  loss.backward();
  return {
    loss: reduction === 'none' ? list(selected.detach()) : [loss.item()],
    k,
    nValid: valid.length,
    grad: list(input.grad as bce.Tensor),
  };
}

const CASES = {
  tiesWeightedMean: { ties: true, ignoreRate: 0.2, p: 0.3, reduction: 'mean', weighted: true },
  tiesMean: { ties: true, ignoreRate: 0.1, p: 0.45, reduction: 'mean', weighted: false },
  randomSum: { ties: false, ignoreRate: 0.15, p: 0.25, reduction: 'sum', weighted: false },
  tiesNone: { ties: true, ignoreRate: 0.2, p: 0.3, reduction: 'none', weighted: false },
  allWeightedMean: { ties: false, ignoreRate: 0.2, p: 1, reduction: 'mean', weighted: true },
} as const;

describeIfAvailable.each([
  [2, 'float32'],
  [3, 'float32'],
  [2, 'float64'],
])('global top-k across %i ranks (%s)', (world, dtype) => {
  test('selection, loss and gradients equal one process on the concatenated batch', async () => {
    const run = await launch(world, ['global-loss', dtype]);
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: '' });
    expect(run.results).toHaveLength(world);
    const tolerance = dtype === 'float64' ? 1e-12 : 2e-6;
    for (const [name, c] of Object.entries(CASES)) {
      const expected = expectedGlobal(world, c.ties, c.ignoreRate, c.p, c.reduction, c.weighted, dtype === 'float64');
      const perRank = run.results.map((r) => (r.cases as Record<string, Record<string, unknown>>)[name]);
      const gradLength = expected.grad.length / world;
      for (const [rank, got] of perRank.entries()) {
        expect({ name, k: got.k, nValid: got.nValid }).toEqual({ name, k: expected.k, nValid: expected.nValid });
        // 'mean' and 'sum' are scaled by the world size on each rank: the average over ranks is the loss, and the
        // averaged gradients are the single-process gradients.
        const scale = c.reduction === 'none' ? 1 : world;
        const grad = (got.grad as number[]).map((g) => g / scale);
        const diff = maxDiff(grad, expected.grad.slice(rank * gradLength, (rank + 1) * gradLength));
        expect({ name, rank, gradientsMatch: diff < tolerance, diff }).toEqual({
          name,
          rank,
          gradientsMatch: true,
          diff,
        });
        const communication = got.communication as { bytes: number; rounds: number };
        // At most: the radix rounds (8-bit digits), one for the ties, one for the weight sum.
        const radixRounds = dtype === 'float64' ? 8 : 4;
        expect(communication.rounds).toBeLessThanOrEqual(radixRounds + 2);
        expect(communication.bytes).toBeLessThanOrEqual(radixRounds * 256 * 8 + world * 8 + 8);
      }
      if (c.reduction === 'none') {
        const concatenated = perRank.flatMap((got) => got.loss as number[]);
        expect(maxDiff(concatenated, expected.loss)).toBeLessThan(tolerance);
      } else {
        const average = perRank.reduce((s, got) => s + (got.loss as number[])[0], 0) / world;
        expect(Math.abs(average - expected.loss[0])).toBeLessThan(tolerance * Math.max(1, Math.abs(expected.loss[0])));
      }
      if (c.p === 1) expect((perRank[0].communication as { rounds: number }).rounds).toBe(2);
    }
  });
});

/** One process, batch world * 2, the same steps as the data-parallel ranks. */
function singleProcessTraining(world: number, kind: string, lossKind: string): number[][] {
  const size = 12;
  const model = bce.jit.load(MODEL);
  const params = model.parameters();
  const optimizer = kind === 'adam' ? new bce.optim.Adam(params, { lr: 0.01 }) : new bce.optim.SGD(params, { lr: 0.1 });
  for (let step = 0; step < 20; step++) {
    const n = 2 * world;
    const batch = trainingBatch(step, n, size);
    const images = bce.tensor(batch.images, { shape: [n, 3, size, size] });
    const labels = bce.tensor(batch.labels, { shape: [n, size, size], dtype: 'int64' });
    optimizer.zeroGrad();
    const logits = model.forward(images);
    const loss =
      lossKind === 'bootstrapped'
        ? bce.bootstrappedCrossEntropy(logits, labels, step, 0.3, { warmup: 5, impl: 'reference' })
        : bce.crossEntropy(logits, labels);
    loss.backward();
    optimizer.step();
  }
  return params.map(list);
}

describeIfAvailable.each([
  [2, 'sgd', 'plain'],
  [2, 'adam', 'plain'],
  [3, 'sgd', 'bootstrapped'],
])('DistributedDataParallel across %i ranks (%s, %s loss)', (world, kind, lossKind) => {
  test('20 steps with batch 2 per rank equal one process with the whole batch', async () => {
    const run = await launch(world, ['ddp', kind, lossKind]);
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: '' });
    expect(run.results).toHaveLength(world);
    const expected = singleProcessTraining(world, kind, lossKind);
    const initial = bce.jit.load(MODEL).parameters().map(list);
    for (const result of run.results) {
      const params = result.params as number[][];
      expect(params).toHaveLength(expected.length);
      for (let i = 0; i < params.length; i++) {
        expect(maxDiff(params[i], expected[i])).toBeLessThan(2e-5);
        // Training moved them (the comparison is not of untouched weights).
        expect(maxDiff(params[i], initial[i])).toBeGreaterThan(1e-4);
      }
    }
  });
});

describeIfAvailable('the launcher', () => {
  test("a failing rank makes it exit with that rank's code and stops the others", async () => {
    const run = await launch(2, ['fail'], ['--grace-ms', '2000']);
    expect(run.code).toBe(3);
    expect(run.stderr).toMatch(/rank 1 failed \(exit code 3\); stopping the other ranks/);
    expect(run.results.some((r) => r.finished)).toBe(false);
    // Rank 0 would sleep 60 s; it was stopped instead.
    expect(run.ms).toBeLessThan(50000);
    const pid = run.results.find((r) => r.rank === 0)?.pid as number;
    expect(() => process.kill(pid, 0)).toThrow();
  });

  test('bad arguments: a usage message and exit code 2', async () => {
    const { spawnSync } = await import('child_process');
    const child = spawnSync(process.execPath, [LAUNCHER, '--nproc-per-node', 'two', WORKER], { encoding: 'utf8' });
    expect(child.status).toBe(2);
    expect(child.stderr).toMatch(/--nproc-per-node must be an integer/);
    const missing = spawnSync(process.execPath, [LAUNCHER, WORKER], { encoding: 'utf8' });
    expect(missing.status).toBe(2);
    expect(missing.stderr).toMatch(/--nproc-per-node is required/);
  });

  test('a collective a rank never joins ends in a clear error after timeoutMs', async () => {
    const run = await launch(2, ['collective-timeout']);
    expect(run.code).toBe(0);
    const rank0 = run.results.find((r) => r.rank === 0) as { message: string; ms: number };
    expect(rank0.message).toMatch(/^allReduce failed: /);
    expect(rank0.ms).toBeLessThan(15000);
  });
});

describeIfAvailable('faults', () => {
  // Gloo's transport aborts the process when the ranks' buffers differ in size; the summary exchanged first
  // turns that into an error on every rank, and the processes end normally (exit code 0, no signal).
  test.each([
    ['dtype', 'allReduce', /^allReduce failed: .*float32 with 4 elements.*float64 with 4 elements/],
    ['shape', 'allReduce', /^allReduce failed: .*float32 with 4 elements.*float32 with 5 elements/],
    ['dtype', 'sync', /^allReduce failed: .*float32 with 4 elements.*float64 with 4 elements/],
    ['shape', 'allGather', /^allGather failed: .*float32 with 4 elements.*float32 with 5 elements/],
    ['dtype', 'broadcast', /^broadcast failed: .*float32 with 4 elements.*float64 with 4 elements/],
  ])('ranks that disagree on %s in %s get an error, not an abort', async (kind, collective, pattern) => {
    const run = await launch(2, ['mismatch', kind, collective]);
    expect(run.stderr).not.toMatch(/signal|terminate called/);
    expect(run.code).toBe(0);
    expect(run.results).toHaveLength(2);
    for (const result of run.results) expect(result.message).toMatch(/the ranks disagree/);
    // Each rank names its own side first.
    const rank0 = run.results[0].message as string;
    const rank1 = run.results[1].message as string;
    expect(rank0).toMatch(pattern);
    expect(rank1).toMatch(/^\w+ failed: the ranks disagree: rank 1 /);
  });

  test('a rank that exits before a collective: the other fails within the timeout, the launcher exits non-zero', async () => {
    // A long grace period, so that the launcher lets the surviving rank report its error before stopping it.
    const run = await launch(2, ['rank-dies'], ['--grace-ms', '30000']);
    expect(run.code).toBe(4);
    expect(run.stderr).toMatch(/rank 1 failed \(exit code 4\)/);
    // Rank 0 (which ignores SIGTERM) gets an error from its collective, well within its 3000 ms timeout.
    const rank0 = run.results.find((r) => r.rank === 0) as { message: string; ms: number };
    expect(rank0.message).toMatch(/^allReduce failed: /);
    expect(rank0.ms).toBeLessThan(15000);
    expect(run.ms).toBeLessThan(60000);
  });

  test('a masterPort in use: a clear error naming the port', async () => {
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    const started = Date.now();
    try {
      await expect(
        bce.distributed.initProcessGroup({
          rank: 0,
          worldSize: 2,
          masterAddr: '127.0.0.1',
          masterPort: port,
          timeoutMs: 3000,
        }),
      ).rejects.toThrow(new RegExp(`could not listen on masterPort ${port}`));
    } finally {
      server.close();
    }
    // Refused when binding, not after the timeout.
    expect(Date.now() - started).toBeLessThan(3000);
    expect(bce.distributed.isInitialized()).toBe(false);
  });
});
