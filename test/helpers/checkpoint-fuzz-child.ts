/**
 * Child process of test/checkpoint.test.ts: loads damaged copies of a valid checkpoint (truncated at many
 * offsets, single bytes flipped at seeded random positions) and prints what happened as one JSON line
 * ("CKFUZZ {...}"), including how many loaded but differ from the original. A crash kills only this process, and
 * the test reports it.
 * Arguments: <valid file> <work folder> <seed> <flips>.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as bce from '../../lib';
import { describeLoaded } from './torch-describe';

const [file, dir, seedText, flipsText] = process.argv.slice(2);
const original = fs.readFileSync(file);
let state = Number(seedText) >>> 0 || 1;
function random(): number {
  // xorshift32: a small seeded generator, so a failure can be replayed.
  state ^= state << 13;
  state >>>= 0;
  state ^= state >>> 17;
  state ^= state << 5;
  state >>>= 0;
  return state / 2 ** 32;
}

const report = {
  loads: 0,
  threw: 0,
  returned: 0,
  returnedDifferent: 0,
  nonErrorThrows: 0,
  errorNames: {} as Record<string, number>,
  emptyMessages: 0,
};
const target = path.join(dir, 'damaged.pt');
// What the undamaged file loads as: a damaged copy that loads must load as exactly this (a flip in padding or a
// timestamp changes nothing), never as different values.
const reference = JSON.stringify(describeLoaded(bce.load(file)), (_, v) => (typeof v === 'number' ? String(v) : v));
function attempt(bytes: Buffer): void {
  fs.writeFileSync(target, bytes);
  report.loads += 1;
  try {
    const loaded = bce.load(target);
    report.returned += 1;
    const seen = JSON.stringify(describeLoaded(loaded), (_, v) => (typeof v === 'number' ? String(v) : v));
    if (seen !== reference) report.returnedDifferent += 1;
  } catch (error) {
    report.threw += 1;
    if (!(error instanceof Error)) {
      report.nonErrorThrows += 1;
      return;
    }
    report.errorNames[error.name] = (report.errorNames[error.name] ?? 0) + 1;
    if (!error.message) report.emptyMessages += 1;
  }
}

const step = Math.max(1, Math.floor(original.length / 400));
for (let cut = 0; cut < original.length; cut += step) attempt(original.subarray(0, cut));
for (let i = 0; i < Number(flipsText); i++) {
  const copy = Buffer.from(original);
  const at = Math.floor(random() * copy.length);
  copy[at] ^= 1 << Math.floor(random() * 8);
  attempt(copy);
}
console.log(`CKFUZZ ${JSON.stringify(report)}`);
