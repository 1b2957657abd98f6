/**
 * `npm run bench`: the addon (impl 'reference' and impl 'fused') against eager PyTorch running the widely used
 * PyTorch implementation of the loss (STCN's BootstrappedCE), same LibTorch, same thread count, same data, in one
 * run, interleaved. See docs/performance.md.
 *
 *   npm run bench                       full run (about 5-10 minutes on a 2-core machine)
 *   npm run bench -- --quick            a small subset (under a minute)
 *   npm run bench -- --sizes 8x19x512x1024 --threads 2 --p 0.25 --passes fwdbwd --reps 5
 *   npm run bench -- --device cuda      tensors on the GPU (needs a CUDA LibTorch build of the addon)
 *
 * Writes <out>/bench.json and <out>/bench.md (default out: bench-results/). The parts: options.ts (the command
 * line), measure.ts (timing), memory.ts (peak-memory probes in fresh processes), report.ts (the report).
 */
import * as os from 'os';
import * as bce from '../../lib';
import { findTorchPython } from '../../test/helpers/torch-python';
import { PythonWorker } from '../../test/helpers/torch-worker';
import { AddonData, disposeData, makeData, warmUpJit } from './addon';
import { fmtNum, log } from './format';
import { Pinning, Workload, copyBandwidth, cpuModel, measureBandwidth, measureWorkload } from './measure';
import { pinBinary, probePeakMemory } from './memory';
import { BenchOptions, defaultReps, parseBenchOptions } from './options';
import { logWorkload, targets, writeReport } from './report';

// Untimed addon calls before the first workload (see warmUpJit).
const JIT_WARMUP_MS = 2000;

/** The machine, the addon binary and the PyTorch worker's versions, for the report's header. */
function describeMachine(
  device: string,
  info: ReturnType<typeof bce.info>,
  pinned: ReturnType<typeof pinBinary>,
  torchInfo: Record<string, unknown> | undefined,
) {
  return {
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
}

async function main(options: BenchOptions): Promise<void> {
  const { device, seed, sizes, threadList, pList, modes, quick } = options;
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
  const machine = describeMachine(device, info, pinned, torchInfo);
  log(
    `bootstrapped-ce benchmark: ${machine.cpu}, ${machine.cores} cores, LibTorch ${machine.libtorch}, torch ${machine.torch ?? 'n/a'}, device ${device}`,
  );
  log(`addon: ${info.binary} (modified ${pinned.modified ?? '?'}, sha256 ${pinned.sha256 ?? '?'})`);

  const bandwidth = await measureBandwidth(worker, threadList, device);
  log(
    `memory bandwidth (copy, read+write bytes / time): ${threadList.map((t) => `${t} thr ${fmtNum(copyBandwidth(bandwidth, t), 1)} GB/s`).join(', ')}` +
      (bandwidth.nodeCopy1Thread ? `; Node Float64Array copy ${fmtNum(bandwidth.nodeCopy1Thread, 1)} GB/s` : ''),
  );

  const warmUpCalls = warmUpJit(sizes[0][1], device, JIT_WARMUP_MS);
  log(
    `warm-up: ${warmUpCalls} untimed addon calls at 1x${sizes[0][1]}x32x32 (${JIT_WARMUP_MS / 1000} s), so that V8 has compiled the facade`,
  );

  const largestElements = Math.max(...sizes.map((s) => s.reduce((a, b) => a * b, 1)));
  const workloads: Workload[] = [];
  let pinning: Pinning | undefined;
  for (const shape of sizes) {
    const size = shape.join('x');
    const elements = shape.reduce((a, b) => a * b, 1);
    const reps = options.repsOverride ?? defaultReps(elements, quick);
    const perRound = Math.max(1, Math.ceil(reps / Math.min(options.roundsOverride ?? 20, reps)));
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
    for (const mode of modes) {
      for (const p of pList) {
        for (const threads of threadList) {
          const measured = await measureWorkload(
            {
              data,
              shape,
              p,
              mode,
              threads,
              reps,
              perRound,
              warmups,
              worker,
              torchReady,
              torchMissing: python ? 'PyTorch worker failed' : 'no Python with torch',
              copyGBps: copyBandwidth(bandwidth, threads),
              pin: options.pin,
            },
            pinning,
          );
          pinning = measured.pinning;
          workloads.push(measured.workload);
          logWorkload(measured.workload);
        }
      }
    }
    disposeData(data);

    // Peak memory: one fresh process per (pass, p) and implementation, at the largest thread count.
    if (options.memWhich === 'all' || (options.memWhich === 'largest' && elements === largestElements)) {
      pinning = await probePeakMemory(
        { shape, seed, device, modes, pList, threadList, workloads, python, worker },
        pinning,
      );
    }
  }
  await worker?.close();

  const finished = new Date();
  writeReport(
    {
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
        reps: options.repsOverride ?? 'by size',
        rounds: options.roundsOverride ?? 'by size',
        seed,
        device,
        quick,
        mem: options.memWhich,
        pin: options.pin,
      },
      pinning: pinning ?? { pinned: false, reason: options.pin ? 'no PyTorch worker' : '--no-pin' },
      targets: targets(workloads),
      workloads,
    },
    options.outDir,
  );
}

main(parseBenchOptions(process.argv)).catch((error) => {
  process.stderr.write(`${(error as Error).stack ?? error}\n`);
  process.exit(1);
});
