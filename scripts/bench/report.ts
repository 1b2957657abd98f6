/**
 * The benchmark's reporting: a progress line per workload, the targets, and bench.json with its markdown table
 * (bench.md), which docs/performance.md explains.
 */
import * as fs from 'fs';
import * as path from 'path';
import { fmtMB, fmtMs, fmtNum, log } from './format';
import { Bandwidth, ImplName, Pinning, Workload } from './measure';
import { REPO_ROOT } from './options';

/** The progress line of a timed workload, with a warning where the implementations' losses differ. */
export function logWorkload(w: Workload): void {
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
    `${w.size.padEnd(14)} p=${w.p} ${w.mode.padEnd(6)} ${w.threads}thr  torch ${fmtMs(torch.median).padStart(7)} ms | ` +
      `reference ${fmtMs(ref.median).padStart(7)} ms (x${fmtNum(ref.ratio)}, min x${fmtNum(ref.minRatio)}) | ` +
      `fused ${fused.available ? `${fmtMs(fused.median).padStart(7)} ms (x${fmtNum(fused.ratio, 3)})` : 'n/a'} | ` +
      `floor ${fmtMs(w.floorMs)} ms${parity}`,
  );
}

export function targets(workloads: Workload[]) {
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

/** bench.json. */
export interface Report {
  generated: string;
  durationS: number;
  command: string;
  machine: Record<string, unknown>;
  loadavg: { start?: number[]; end: number[] };
  bandwidthGBps: Bandwidth;
  options: Record<string, unknown>;
  pinning: Pinning;
  targets: ReturnType<typeof targets>;
  workloads: Workload[];
}

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

/** Writes bench.json and bench.md into `outDir` and prints the markdown. */
export function writeReport(report: Report, outDir: string): void {
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(path.join(outDir, 'bench.json'), `${JSON.stringify(report, null, 1)}\n`);
  const markdown = toMarkdown(report);
  fs.writeFileSync(path.join(outDir, 'bench.md'), markdown);
  log('');
  log(markdown);
  log(`wrote ${path.relative(process.cwd(), path.join(outDir, 'bench.json'))} and bench.md (${report.durationS} s)`);
}
