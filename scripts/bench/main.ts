/**
 * `npm run bench`: the addon (impl 'reference' and impl 'fused') against the seed's eager PyTorch implementation,
 * same LibTorch, same thread count, same data, in one run, interleaved. See docs/performance.md.
 *
 *   npm run bench                       full run (about 5-10 minutes on a 2-core machine)
 *   npm run bench -- --quick            a small subset (under a minute)
 *   npm run bench -- --sizes 8x19x512x1024 --threads 2 --p 0.25 --passes fwdbwd --reps 5
 *   npm run bench -- --device cuda      tensors on the GPU (needs a CUDA LibTorch build of the addon)
 *
 * Writes <out>/bench.json and <out>/bench.md (default out: bench-results/).
 */
import { spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Command } from 'commander';
import * as bce from '../../lib';
import { AddonData, AddonImpl, Mode, disposeData, makeData, oneCall, probeFused, warmUpJit } from './addon';
import { findTorchPython } from '../../test/helpers/torch-python';
import { PythonWorker } from '../../test/helpers/torch-worker';

const REPO_ROOT = path.resolve(__dirname, '..', '..');
const DEFAULT_SIZES = ['1x19x32x32', '1x19x128x128', '2x19x256x512', '8x19x512x1024'];
const QUICK_SIZES = ['1x19x32x32', '1x19x128x128', '2x19x256x512'];
const SEED = 0;
// Untimed addon calls before the first workload (see warmUpJit).
const JIT_WARMUP_MS = 2000;

type ImplName = 'torch' | AddonImpl;
const IMPLS: ImplName[] = ['reference', 'fused', 'torch'];

// ---------------------------------------------------------------- options

function list<T>(parse: (s: string) => T) {
  return (value: string): T[] =>
    value
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean)
      .map(parse);
}

function parseSize(s: string): number[] {
  const shape = s.toLowerCase().split('x').map(Number);
  if (shape.length < 3 || shape.some((d) => !Number.isInteger(d) || d < 1)) {
    throw new Error(`--sizes: '${s}' is not NxCxHxW (e.g. 8x19x512x1024)`);
  }
  return shape;
}

function positiveInt(name: string) {
  return (s: string): number => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < 1) throw new Error(`${name}: '${s}' is not a positive integer`);
    return n;
  };
}

function fraction(s: string): number {
  const p = Number(s);
  if (!(p > 0 && p <= 1)) throw new Error(`--p: '${s}' is not in (0, 1]`);
  return p;
}

function mode(s: string): Mode {
  if (s !== 'fwd' && s !== 'fwdbwd') throw new Error(`--passes: '${s}' is neither fwd nor fwdbwd`);
  return s;
}

const program = new Command()
  .name('npm run bench --')
  .description('Bootstrapped cross-entropy: the addon against eager PyTorch (the seed), interleaved, in one run.')
  .option('--sizes <list>', `logit shapes NxCxHxW, comma-separated (default ${DEFAULT_SIZES.join(',')})`)
  .option('--threads <list>', 'intra-op thread counts (default 1,2; quick: 2, or 1 on a 1-core machine)')
  .option('--p <list>', 'kept fractions (default 0.15,0.25; quick: 0.25)')
  .option('--passes <list>', 'fwd (forward alone) and/or fwdbwd (forward + backward)', 'fwd,fwdbwd')
  .option('--reps <n>', 'timed repetitions per implementation and workload (default: by size, 5 to 200)')
  .option(
    '--rounds <n>',
    'interleaved rounds the repetitions are split into (default: 20, or one per repetition below 20)',
  )
  .option('--quick', 'a small subset that runs in under a minute')
  .option(
    '--mem <which>',
    'peak memory (a fresh process per workload and implementation): all, largest (size only) or none (default all; quick: largest)',
  )
  .option('--device <device>', 'cpu or cuda', 'cpu')
  .option('--out <dir>', 'folder for bench.json and bench.md', 'bench-results')
  .option('--seed <n>', 'random seed of the data (the same in both processes)', String(SEED))
  .option('--no-pin', 'leave both processes to the scheduler (default: both on the same t CPUs for t threads; Linux)');

program.parse(process.argv);
const raw = program.opts<{
  sizes?: string;
  threads?: string;
  p?: string;
  passes: string;
  reps?: string;
  rounds?: string;
  quick?: boolean;
  mem?: string;
  device: string;
  out: string;
  seed: string;
  pin: boolean;
}>();

const quick = !!raw.quick;
const sizes = list(parseSize)(raw.sizes ?? (quick ? QUICK_SIZES : DEFAULT_SIZES).join(','));
const threadList = raw.threads
  ? list(positiveInt('--threads'))(raw.threads)
  : quick
    ? [Math.min(2, os.cpus().length)]
    : [1, 2];
const pList = list(fraction)(raw.p ?? (quick ? '0.25' : '0.15,0.25'));
const modes = list(mode)(raw.passes);
const repsOverride = raw.reps === undefined ? undefined : positiveInt('--reps')(raw.reps);
const roundsOverride = raw.rounds === undefined ? undefined : positiveInt('--rounds')(raw.rounds);
const device = raw.device;
if (device !== 'cpu' && !/^cuda(:\d+)?$/.test(device)) throw new Error(`--device: '${device}' is neither cpu nor cuda`);
const seed = Number(raw.seed);
const outDir = path.resolve(REPO_ROOT, raw.out);
const memWhich = raw.mem ?? (quick ? 'largest' : 'all');
if (!['all', 'largest', 'none'].includes(memWhich)) throw new Error(`--mem: '${memWhich}' is not all, largest or none`);
const largestElements = Math.max(...sizes.map((s) => s.reduce((a, b) => a * b, 1)));

/**
 * Default repetitions by size: the small sizes take microseconds per call, so many calls in many short rounds keep
 * a pause of the VM (or another process) from covering most of one implementation's calls; few for the 319 MB case
 * (up to 1 s per call).
 */
function defaultReps(elements: number): number {
  const base = elements >= 40e6 ? 6 : elements >= 2e6 ? 40 : elements >= 200e3 ? 400 : 2000;
  return quick ? Math.max(3, Math.ceil(base / 4)) : base;
}

// ---------------------------------------------------------------- helpers

interface Stats {
  reps: number;
  median: number;
  min: number;
  max: number;
}

function stats(times: number[]): Stats {
  const sorted = [...times].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return { reps: sorted.length, median, min: sorted[0], max: sorted[sorted.length - 1] };
}

function fmtMs(v: number | undefined | null): string {
  if (v === undefined || v === null || !Number.isFinite(v)) return 'n/a';
  if (v < 1) return v.toFixed(3);
  if (v < 10) return v.toFixed(2);
  if (v < 100) return v.toFixed(1);
  return v.toFixed(0);
}

function fmtNum(v: number | undefined | null, digits = 2): string {
  return v === undefined || v === null || !Number.isFinite(v) ? 'n/a' : v.toFixed(digits);
}

function fmtMB(bytes: number | undefined | null): string {
  if (bytes === undefined || bytes === null) return 'n/a';
  return (bytes / 1e6).toFixed(bytes < 10e6 ? 1 : 0);
}

function log(line: string): void {
  process.stdout.write(`${line}\n`);
}

function cpuModel(): string {
  try {
    const match = /^model name\s*:\s*(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
    if (match) return match[1].trim();
  } catch {
    /* not Linux */
  }
  return os.cpus()[0]?.model ?? 'unknown';
}

/** Copy bandwidth of one Node thread: Float64Array.set over 256 MB (read + write bytes / time, best of 5). */
function nodeCopyBandwidth(): number {
  const n = 32 * 1000 * 1000;
  const src = new Float64Array(n).fill(1);
  const dst = new Float64Array(n).fill(0);
  let best = Infinity;
  for (let i = 0; i < 5; i++) {
    const t0 = process.hrtime.bigint();
    dst.set(src);
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return (2 * n * 8) / best / 1e9;
}

/**
 * The addon binary this process loaded, copied to a private file that the fresh processes of the memory
 * measurement load (BOOTSTRAPPED_CE_BINARY), so that they run the same code even if the working tree's build or
 * prebuild changes meanwhile.
 */
let pinnedBinary: string | undefined;

function pinBinary(binary: string): { sha256?: string; bytes?: number; modified?: string } {
  try {
    const bytes = fs.readFileSync(binary);
    const stat = fs.statSync(binary);
    pinnedBinary = path.join(os.tmpdir(), `bootstrapped-ce-bench-${process.pid}.node`);
    fs.writeFileSync(pinnedBinary, bytes);
    process.on('exit', () => fs.rmSync(pinnedBinary!, { force: true }));
    return {
      sha256: crypto.createHash('sha256').update(bytes).digest('hex').slice(0, 16),
      bytes: bytes.length,
      modified: stat.mtime.toISOString(),
    };
  } catch {
    return {};
  }
}

/** Peak memory of the addon in a fresh Node process (mem_child.ts). */
function addonPeak(job: Record<string, unknown>): MemResult {
  const env = pinnedBinary ? { ...process.env, BOOTSTRAPPED_CE_BINARY: pinnedBinary } : process.env;
  const r = spawnSync(
    process.execPath,
    ['--expose-gc', '-r', 'ts-node/register/transpile-only', path.join(__dirname, 'mem_child.ts'), JSON.stringify(job)],
    { cwd: REPO_ROOT, encoding: 'utf8', maxBuffer: 16 << 20, timeout: 600_000, env },
  );
  const line = (r.stdout || '').split('\n').find((l) => l.startsWith('BENCH_RESULT '));
  if (!line)
    return {
      error: `mem_child failed (status ${r.status}): ${(r.stderr || '').trim().split('\n').slice(-3).join(' | ')}`,
    };
  const parsed = JSON.parse(line.slice('BENCH_RESULT '.length));
  if (parsed.ok && job.impl === 'fused' && !parsed.fused)
    return { error: 'the fresh process did not run the fused kernel' };
  return parsed.ok ? parsed : { error: parsed.error };
}

/** Peak memory of PyTorch in a fresh Python process. */
async function torchPeak(python: string, shape: number[], p: number, m: Mode, threads: number): Promise<MemResult> {
  const worker = new PythonWorker(python);
  try {
    await worker.request({ cmd: 'data', shape, seed, device });
    return await worker.request<MemResult>({ cmd: 'mem', p, mode: m, threads });
  } catch (error) {
    return { error: String((error as Error).message) };
  } finally {
    await worker.close();
  }
}

interface MemResult {
  peakBytes?: number | null;
  peak_bytes?: number;
  method?: string;
  firstMs?: number;
  first_ms?: number;
  fused?: boolean;
  error?: string;
}

// ---------------------------------------------------------------- report types

interface ImplResult extends Partial<Stats> {
  available: boolean;
  reason?: string;
  times?: number[];
  /** Untimed calls at the start of each round, and the median of their times. */
  roundWarmups?: number;
  roundWarmupMedian?: number;
  gbps?: number;
  ratio?: number;
  /** min / PyTorch min: less sensitive to other processes than the ratio of medians. */
  minRatio?: number;
  loss?: number;
  k?: number;
  peakBytes?: number | null;
  peakMethod?: string;
  firstMs?: number;
  ofFloor?: number;
}

interface Workload {
  size: string;
  shape: number[];
  p: number;
  mode: Mode;
  threads: number;
  bytes: { logits: number; labels: number; effective: number; floor: number };
  floorMs?: number;
  autoFused?: boolean;
  loadavg: number[];
  impls: Record<ImplName, ImplResult>;
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const started = new Date();
  if (device !== 'cpu' && !bce.cuda.isAvailable()) {
    throw new Error(
      `--device ${device}: this addon's LibTorch has no CUDA or no GPU is visible (bce.cuda.isAvailable() is false)`,
    );
  }
  const info = bce.info();
  // The Python whose torch is the version of the addon's LibTorch, so both sides run the same library.
  const found = findTorchPython();
  const python = found.path ?? undefined;
  let worker: PythonWorker | undefined;
  let torchInfo: Record<string, unknown> | undefined;
  if (python) {
    worker = new PythonWorker(python);
    torchInfo = await worker.request({ cmd: 'info' });
  } else {
    log(`warning: no Python that imports torch (${found.reason}); PyTorch columns will be n/a`);
  }
  const pinned = pinBinary(info.binary);
  const machine = {
    cpu: cpuModel(),
    cores: os.cpus().length,
    memoryGB: Number((os.totalmem() / 1e9).toFixed(1)),
    kernel: os.release(),
    node: process.version,
    libtorch: info.libtorchVersion,
    libtorchLoadedFrom: info.loadedFrom,
    addonBinary: info.binary,
    addonBinaryModified: pinned.modified,
    addonBinarySha256: pinned.sha256,
    torch: torchInfo?.torch,
    python: torchInfo ? `${torchInfo.python} (${torchInfo.executable})` : undefined,
    device: device === 'cpu' ? 'cpu' : `${device} (${String(torchInfo?.cuda_device ?? '?')})`,
  };
  log(
    `bootstrapped-ce benchmark: ${machine.cpu}, ${machine.cores} cores, LibTorch ${machine.libtorch}, torch ${machine.torch ?? 'n/a'}, device ${device}`,
  );
  log(`addon: ${info.binary} (modified ${pinned.modified ?? '?'}, sha256 ${pinned.sha256 ?? '?'})`);

  // Memory bandwidth: torch copy_ of a preallocated 256 MB buffer at each thread count, and one Node thread.
  const bandwidth: { nodeCopy1Thread?: number; torch: Record<number, { copy: number; read: number }> } = { torch: {} };
  if (device === 'cpu') bandwidth.nodeCopy1Thread = nodeCopyBandwidth();
  if (worker) {
    for (const t of threadList) {
      const r = await worker.request<{ copy_gbps: number; read_gbps: number }>({
        cmd: 'bandwidth',
        threads: t,
        mb: 256,
        device,
      });
      bandwidth.torch[t] = { copy: r.copy_gbps, read: r.read_gbps };
    }
  }
  const copyBw = (t: number): number | undefined =>
    bandwidth.torch[t]?.copy ?? (t === 1 ? bandwidth.nodeCopy1Thread : undefined);
  log(
    `memory bandwidth (copy, read+write bytes / time): ${threadList.map((t) => `${t} thr ${fmtNum(copyBw(t), 1)} GB/s`).join(', ')}` +
      (bandwidth.nodeCopy1Thread ? `; Node Float64Array copy ${fmtNum(bandwidth.nodeCopy1Thread, 1)} GB/s` : ''),
  );

  const warmUpCalls = warmUpJit(sizes[0][1], device, JIT_WARMUP_MS);
  log(
    `warm-up: ${warmUpCalls} untimed addon calls at 1x${sizes[0][1]}x32x32 (${JIT_WARMUP_MS / 1000} s), so that V8 has compiled the facade`,
  );

  const workloads: Workload[] = [];
  let pinning: Pinning | undefined;
  for (const shape of sizes) {
    const size = shape.join('x');
    const elements = shape.reduce((a, b) => a * b, 1);
    const pixels = elements / shape[1];
    const reps = repsOverride ?? defaultReps(elements);
    const perRound = Math.max(1, Math.ceil(reps / Math.min(roundsOverride ?? 20, reps)));
    const warmups = reps >= 40 ? Math.ceil(reps / 10) : 1;
    const data: AddonData = makeData(shape, seed, device);
    // A full collection, as the PyTorch worker's gc.collect() when it makes its data: the harness's own garbage
    // (the 256 MB bandwidth buffers, the previous size's results) is not left for V8 to collect on its background
    // threads during the timed calls, where it took a core from them (npm run bench exposes gc).
    (globalThis as { gc?: () => void }).gc?.();
    let torchReady = false;
    if (worker?.alive) {
      try {
        await worker.request({ cmd: 'data', shape, seed, device });
        torchReady = true;
      } catch (error) {
        log(`  PyTorch could not make ${size}: ${(error as Error).message}`);
      }
    }
    const T = 4 * elements;
    const L = 8 * pixels;
    const P4 = 4 * pixels;
    for (const m of modes) {
      for (const p of pList) {
        for (const threads of threadList) {
          bce.setNumThreads(threads);
          const floorBytes = m === 'fwd' ? T + L + P4 : 3 * T + 2 * L + 2 * P4;
          const bw = copyBw(threads);
          const w: Workload = {
            size,
            shape,
            p,
            mode: m,
            threads,
            bytes: { logits: T, labels: L, effective: m === 'fwd' ? T : 2 * T, floor: floorBytes },
            floorMs: bw ? (floorBytes / (bw * 1e9)) * 1e3 : undefined,
            loadavg: os.loadavg(),
            impls: { reference: { available: true }, fused: { available: false }, torch: { available: torchReady } },
          };
          const probe = probeFused(data, p, m);
          w.autoFused = probe.autoFused;
          w.impls.fused = probe.available ? { available: true } : { available: false, reason: probe.reason };
          if (!torchReady) w.impls.torch.reason = python ? 'PyTorch worker failed' : 'no Python with torch';

          const times: Record<ImplName, number[]> = { reference: [], fused: [], torch: [] };
          const warmupTimes: Record<ImplName, number[]> = { reference: [], fused: [], torch: [] };
          const last: Partial<Record<ImplName, { loss: number; k: number }>> = {};
          // `skip` untimed calls, then n timed ones (recorded in `into`).
          const runAddon = (impl: AddonImpl, skip: number, n: number, into: number[][]) => {
            for (let i = 0; i < skip + n; i++) {
              const r = oneCall(data, p, m, impl);
              into[i < skip ? 0 : 1].push(r.ms);
              last[impl] = { loss: r.loss, k: r.k };
            }
          };
          const runTorch = async (skip: number, n: number, into: number[][]) => {
            try {
              const r = await worker!.request<{ times_ms: number[]; loss: number; k: number }>({
                cmd: 'time',
                p,
                mode: m,
                threads,
                reps: skip + n,
              });
              into[0].push(...r.times_ms.slice(0, skip));
              into[1].push(...r.times_ms.slice(skip));
              last.torch = { loss: r.loss, k: r.k };
            } catch (error) {
              w.impls.torch = { available: false, reason: (error as Error).message.split('\n')[0] };
            }
          };
          const run = (impl: ImplName, skip: number, n: number, into: number[][]) =>
            impl === 'torch' ? runTorch(skip, n, into) : Promise.resolve(runAddon(impl, skip, n, into));
          const active = IMPLS.filter((impl) => w.impls[impl].available);
          // Warm-up, then rounds: each round runs every implementation perRound times, the order rotating. The first
          // calls after the other process's turn run up to 3-4x slower, on both sides, recovering over ~5 ms of
          // calls, so each round starts with untimed calls worth ~5 ms (at least one) per implementation: the
          // figures are steady-state times, as in a loop that calls the loss step after step.
          const roundWarmups: Partial<Record<ImplName, number>> = {};
          if (raw.pin && worker?.alive) pinning = await pinProcesses(worker, threads, pinning);
          else if (pinning?.pinned && !pinning.stranded) {
            // Only the worker can change the masks; this process keeps the last workload's CPUs.
            pinning.stranded = true;
            log(
              `warning: the PyTorch worker is gone; the addon's later timings run on CPUs ${pinning.cpus?.join(',')} only`,
            );
          }
          for (const impl of active) {
            const initial: number[] = [];
            await run(impl, warmups, 0, [initial, []]);
            const perCall = initial.length ? stats(initial).median : Infinity; // empty when the worker failed
            roundWarmups[impl] = Math.min(100, Math.max(1, Math.ceil(5 / perCall)));
          }
          for (let round = 0; times.reference.length < reps; round++) {
            const n = Math.min(perRound, reps - times.reference.length);
            for (let j = 0; j < active.length; j++) {
              const impl = active[(round + j) % active.length];
              if (!w.impls[impl].available) continue;
              await run(impl, roundWarmups[impl]!, n, [warmupTimes[impl], times[impl]]);
            }
          }
          const torchStats = w.impls.torch.available && times.torch.length ? stats(times.torch) : undefined;
          for (const impl of IMPLS) {
            const result = w.impls[impl];
            if (!result.available || times[impl].length === 0) continue;
            const s = stats(times[impl]);
            Object.assign(result, s, {
              times: times[impl],
              roundWarmups: roundWarmups[impl],
              roundWarmupMedian: warmupTimes[impl].length ? stats(warmupTimes[impl]).median : undefined,
              gbps: w.bytes.effective / (s.median * 1e6),
              ratio: torchStats ? s.median / torchStats.median : undefined,
              minRatio: torchStats ? s.min / torchStats.min : undefined,
              ofFloor: w.floorMs ? w.floorMs / s.median : undefined,
              loss: last[impl]?.loss,
              k: last[impl]?.k,
            });
          }
          workloads.push(w);
          const ref = w.impls.reference;
          const fused = w.impls.fused;
          const torch = w.impls.torch;
          const differs = (a?: number, b?: number) =>
            a !== undefined && b !== undefined && Math.abs(a - b) > 1e-4 * Math.max(1, Math.abs(a));
          const parity =
            (differs(torch.loss, ref.loss) ? `  LOSS MISMATCH torch ${torch.loss} vs reference ${ref.loss}` : '') +
            (differs(torch.loss ?? ref.loss, fused.loss)
              ? `  LOSS MISMATCH ${torch.loss ?? ref.loss} vs fused ${fused.loss}`
              : '');
          log(
            `${size.padEnd(14)} p=${p} ${m.padEnd(6)} ${threads}thr  torch ${fmtMs(torch.median).padStart(7)} ms | ` +
              `reference ${fmtMs(ref.median).padStart(7)} ms (x${fmtNum(ref.ratio)}, min x${fmtNum(ref.minRatio)}) | ` +
              `fused ${fused.available ? `${fmtMs(fused.median).padStart(7)} ms (x${fmtNum(fused.ratio, 3)})` : 'n/a'} | ` +
              `floor ${fmtMs(w.floorMs)} ms${parity}`,
          );
        }
      }
    }
    disposeData(data);

    // Peak memory: one fresh process per (pass, p) and implementation, at the largest thread count.
    if (memWhich === 'all' || (memWhich === 'largest' && elements === largestElements)) {
      const memThreads = Math.max(...threadList);
      // Fresh processes inherit this one's CPU mask: give them every CPU, as outside the benchmark.
      if (pinning?.pinned && worker?.alive) pinning = await pinProcesses(worker, undefined, pinning);
      for (const m of modes) {
        for (const p of pList) {
          const rows = workloads.filter((w) => w.size === size && w.mode === m && w.p === p);
          const job = { shape, seed, device, p, mode: m, threads: memThreads };
          const results: Partial<Record<ImplName, MemResult>> = {};
          results.reference = addonPeak({ ...job, impl: 'reference' });
          if (rows.some((w) => w.impls.fused.available)) results.fused = addonPeak({ ...job, impl: 'fused' });
          if (python && rows.some((w) => w.impls.torch.available))
            results.torch = await torchPeak(python, shape, p, m, memThreads);
          for (const w of rows) {
            for (const impl of IMPLS) {
              const r = results[impl];
              if (!r || !w.impls[impl].available) continue;
              if (r.error) {
                w.impls[impl].peakMethod = `error: ${r.error}`;
                continue;
              }
              w.impls[impl].peakBytes = r.peakBytes ?? r.peak_bytes ?? null;
              w.impls[impl].peakMethod = `${r.method}; fresh process, ${memThreads} thread(s)`;
              w.impls[impl].firstMs = r.firstMs ?? r.first_ms;
            }
          }
          log(
            `${size.padEnd(14)} p=${p} ${m.padEnd(6)} peak extra memory (fresh process): ` +
              IMPLS.filter((i) => results[i])
                .map(
                  (i) =>
                    `${i} ${results[i]!.error ? 'error' : `${fmtMB(results[i]!.peakBytes ?? results[i]!.peak_bytes)} MB`}`,
                )
                .join(', '),
          );
        }
      }
    }
  }
  await worker?.close();

  const finished = new Date();
  const report = {
    generated: finished.toISOString(),
    durationS: Math.round((finished.getTime() - started.getTime()) / 1000),
    command: `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim(),
    machine,
    loadavg: { start: workloads[0]?.loadavg, end: os.loadavg() },
    bandwidthGBps: bandwidth,
    options: {
      sizes: sizes.map((s) => s.join('x')),
      threads: threadList,
      p: pList,
      passes: modes,
      reps: repsOverride ?? 'by size',
      rounds: roundsOverride ?? 'by size',
      seed,
      device,
      quick,
      mem: memWhich,
      pin: raw.pin,
    },
    pinning: pinning ?? { pinned: false, reason: raw.pin ? 'no PyTorch worker' : '--no-pin' },
    targets: targets(workloads),
    workloads,
  };
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(path.join(outDir, 'bench.json'), `${JSON.stringify(report, null, 1)}\n`);
  const markdown = toMarkdown(report);
  fs.writeFileSync(path.join(outDir, 'bench.md'), markdown);
  log('');
  log(markdown);
  log(`wrote ${path.relative(process.cwd(), path.join(outDir, 'bench.json'))} and bench.md (${report.durationS} s)`);
}

interface Pinning {
  pinned: boolean;
  /** The CPUs of the last request (the first t allowed CPUs for t threads, or all of them). */
  cpus?: number[];
  reason?: string;
  /** The worker ended while this process was pinned. */
  stranded?: boolean;
}

/**
 * Puts every thread of this process and of the PyTorch worker on the same `threads` CPUs, or back on every CPU
 * when `threads` is undefined (torch_bench.py's cmd_pin, which explains why). Called before each workload's warm-up
 * and before the memory probes; a refusal is reported once and timing goes on unpinned.
 */
async function pinProcesses(
  worker: PythonWorker,
  threads: number | undefined,
  previous: Pinning | undefined,
): Promise<Pinning> {
  if (previous && !previous.pinned) return previous;
  let result: Pinning;
  try {
    result = await worker.request<Pinning>({ cmd: 'pin', pids: [process.pid], cpus: threads });
  } catch (error) {
    result = { pinned: false, reason: (error as Error).message.split('\n')[0] };
  }
  if (!previous)
    log(
      result.pinned
        ? `timing both processes on the same CPUs: the first t allowed CPUs for t threads`
        : `not pinned: ${result.reason}`,
    );
  return result;
}

// ---------------------------------------------------------------- targets and markdown

function targets(workloads: Workload[]) {
  const refRatios = workloads.filter((w) => w.impls.reference.ratio !== undefined);
  const worst = refRatios.reduce<Workload | undefined>(
    (a, w) => (!a || w.impls.reference.ratio! > a.impls.reference.ratio! ? w : a),
    undefined,
  );
  const fusedTarget = workloads.find(
    (w) => w.size === '8x19x512x1024' && w.p === 0.25 && w.mode === 'fwdbwd' && w.threads === 2,
  );
  const f = fusedTarget?.impls.fused;
  const speedup = f?.available && f.ratio ? 1 / f.ratio : undefined;
  const memLimit = fusedTarget
    ? fusedTarget.bytes.logits + 8 * (fusedTarget.bytes.logits / fusedTarget.shape[1])
    : undefined;
  return {
    referenceRatio: {
      target: 'reference / PyTorch median <= 1.05 at every workload',
      worst: worst
        ? {
            ratio: worst.impls.reference.ratio,
            workload: `${worst.size} p=${worst.p} ${worst.mode} ${worst.threads}thr`,
          }
        : undefined,
      over: refRatios
        .filter((w) => w.impls.reference.ratio! > 1.05)
        .map((w) => `${w.size} p=${w.p} ${w.mode} ${w.threads}thr: ${fmtNum(w.impls.reference.ratio)}`),
      met: refRatios.length > 0 ? refRatios.every((w) => w.impls.reference.ratio! <= 1.05) : undefined,
    },
    fusedSpeedup: {
      target: 'fused >= 10x faster than PyTorch at 8x19x512x1024, p=0.25, fwd+bwd, 2 threads',
      speedup,
      met: speedup === undefined ? undefined : speedup >= 10,
      note: !fusedTarget ? 'workload not in this run' : !f?.available ? `fused n/a: ${f?.reason}` : undefined,
    },
    fusedPeakMemory: {
      target: 'fused peak extra memory <= gradient + a few per-pixel vectors (checked as T + 8 x 4P)',
      limitBytes: memLimit,
      peakBytes: f?.peakBytes,
      met: f?.peakBytes == null || memLimit === undefined ? undefined : f.peakBytes <= memLimit,
    },
  };
}

type Report = {
  generated: string;
  durationS: number;
  command: string;
  machine: Record<string, unknown>;
  loadavg: { start?: number[]; end: number[] };
  pinning: Pinning;
  bandwidthGBps: { nodeCopy1Thread?: number; torch: Record<number, { copy: number; read: number }> };
  targets: ReturnType<typeof targets>;
  workloads: Workload[];
};

function metText(met: boolean | undefined): string {
  return met === undefined ? 'n/a' : met ? 'met' : 'NOT met';
}

function toMarkdown(r: Report): string {
  const m = r.machine;
  const lines: string[] = [];
  lines.push(`Generated ${r.generated} by \`${r.command}\` in ${r.durationS} s.`);
  lines.push('');
  lines.push(
    `Machine: ${m.cpu}, ${m.cores} cores, ${m.memoryGB} GB, Linux ${m.kernel}; Node ${m.node}; LibTorch ${m.libtorch} ` +
      `(${m.libtorchLoadedFrom}); PyTorch ${m.torch ?? 'n/a'}, Python ${m.python ?? 'n/a'}; device ${m.device}. ` +
      `Addon ${path.relative(REPO_ROOT, String(m.addonBinary))} (sha256 ${m.addonBinarySha256 ?? '?'}, built ${m.addonBinaryModified ?? '?'}). ` +
      `Load average at start ${r.loadavg.start?.map((v) => v.toFixed(2)).join(' ') ?? 'n/a'}, at end ${r.loadavg.end.map((v) => v.toFixed(2)).join(' ')}. ` +
      (r.pinning.pinned
        ? 'Both processes on the same CPUs while timing: the first t allowed CPUs for t threads.'
        : `Processes not pinned (${r.pinning.reason}).`),
  );
  lines.push('');
  const bw = Object.entries(r.bandwidthGBps.torch).map(
    ([t, v]) => `${t} thread(s): copy ${v.copy.toFixed(1)} GB/s, read ${v.read.toFixed(1)} GB/s`,
  );
  if (r.bandwidthGBps.nodeCopy1Thread)
    bw.push(`Node Float64Array copy (1 thread): ${r.bandwidthGBps.nodeCopy1Thread.toFixed(1)} GB/s`);
  lines.push(`Measured memory bandwidth (256 MB, best of 5; copy counts bytes read + written): ${bw.join('; ')}.`);
  lines.push('');
  const t = r.targets;
  lines.push(
    `Targets: reference/PyTorch <= 1.05 everywhere: **${metText(t.referenceRatio.met)}**` +
      (t.referenceRatio.worst
        ? ` (worst ${fmtNum(t.referenceRatio.worst.ratio)} at ${t.referenceRatio.worst.workload}` +
          (t.referenceRatio.over.length ? `; ${t.referenceRatio.over.length} workload(s) over 1.05` : '') +
          ')'
        : '') +
      `. Fused >= 10x at 8x19x512x1024 p=0.25 fwd+bwd 2 threads: **${metText(t.fusedSpeedup.met)}**` +
      (t.fusedSpeedup.speedup
        ? ` (${t.fusedSpeedup.speedup.toFixed(1)}x)`
        : t.fusedSpeedup.note
          ? ` (${t.fusedSpeedup.note})`
          : '') +
      `. Fused peak memory <= gradient + 8 per-pixel vectors: **${metText(t.fusedPeakMemory.met)}**` +
      (t.fusedPeakMemory.peakBytes != null
        ? ` (${fmtMB(t.fusedPeakMemory.peakBytes)} MB of ${fmtMB(t.fusedPeakMemory.limitBytes)} MB)`
        : '') +
      '.',
  );
  lines.push('');
  lines.push(
    '| size | p | pass | thr | impl | median ms | min | max | vs PyTorch | (min) | GB/s | floor ms | % of floor | peak MB | first call ms |',
  );
  lines.push('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const w of r.workloads) {
    for (const impl of ['torch', 'reference', 'fused'] as ImplName[]) {
      const x = w.impls[impl];
      const name = impl === 'torch' ? 'PyTorch eager' : impl === 'fused' && w.autoFused ? 'fused (auto)' : impl;
      if (!x.available) {
        lines.push(`| ${w.size} | ${w.p} | ${w.mode} | ${w.threads} | ${name} | n/a | | | | | | | | | |`);
        continue;
      }
      const ratio =
        impl === 'torch'
          ? '1'
          : x.ratio === undefined
            ? 'n/a'
            : x.ratio < 0.5
              ? `${fmtNum(x.ratio, 3)} (${(1 / x.ratio).toFixed(1)}x faster)`
              : fmtNum(x.ratio);
      lines.push(
        `| ${w.size} | ${w.p} | ${w.mode} | ${w.threads} | ${name} | ${fmtMs(x.median)} | ${fmtMs(x.min)} | ${fmtMs(x.max)} | ${ratio} | ${impl === 'torch' ? '1' : fmtNum(x.minRatio)} | ` +
          `${fmtNum(x.gbps)} | ${fmtMs(w.floorMs)} | ${x.ofFloor === undefined ? 'n/a' : `${(100 * x.ofFloor).toFixed(x.ofFloor < 0.1 ? 1 : 0)} %`} | ` +
          `${fmtMB(x.peakBytes)} | ${fmtMs(x.firstMs)} |`,
      );
    }
  }
  const reasons = [...new Set(r.workloads.filter((w) => !w.impls.fused.available).map((w) => w.impls.fused.reason))];
  lines.push('');
  lines.push(
    'median/min/max: milliseconds per call, timed inside each process around the op only (data creation excluded); ' +
      'vs PyTorch: median / PyTorch median (< 1 is faster); (min): min / PyTorch min; GB/s: logit bytes read (fwd) or logit bytes read + gradient bytes ' +
      'written (fwdbwd) / median; floor: bytes that must move (fwd T + L + 4P, fwdbwd 3T + 2L + 8P, int64 labels) / measured ' +
      'copy bandwidth at that thread count; % of floor: floor / median; peak MB: VmHWM increase during one call in a fresh ' +
      'process after a warm-up call on a 1xCx8x8 input (largest thread count of the run; gradient included for fwdbwd); ' +
      'first call ms: that fresh-process call, page faults included.' +
      (reasons.length ? ` fused n/a: ${reasons.join('; ')}.` : ''),
  );
  lines.push('');
  return lines.join('\n');
}

main().catch((error) => {
  process.stderr.write(`${(error as Error).stack ?? error}\n`);
  process.exit(1);
});
