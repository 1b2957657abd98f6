/**
 * `npm run mutate`: StrykerJS over the TypeScript facade (stryker.config.json), then the scripted C++ mutants
 * (scripts/mutate-cpp.ts), then one summary of both kill rates from their reports in reports/mutation/.
 * `npm run mutate -- --summary` prints the summary of the reports already there. Mutants marked equivalent carry a
 * `// Stryker disable` comment with the reason; Stryker reports them as Ignored.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { CPP_REPORT, MutantOutcome } from './mutate-cpp';

const root = path.join(__dirname, '..');
const STRYKER_REPORT = path.join(root, 'reports', 'mutation', 'stryker.json');

/** Counts of Stryker's mutant statuses (mutation-testing-report-schema). */
export function strykerCounts(report: { files: Record<string, { mutants: { status: string }[] }> }) {
  const counts: Record<string, number> = {};
  for (const file of Object.values(report.files)) {
    for (const m of file.mutants) counts[m.status] = (counts[m.status] ?? 0) + 1;
  }
  const of = (status: string) => counts[status] ?? 0;
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  return {
    total,
    killed: of('Killed'),
    timeout: of('Timeout'),
    survived: of('Survived'),
    noCoverage: of('NoCoverage'),
    equivalent: of('Ignored'),
    compileErrors: of('CompileError'),
    runtimeErrors: of('RuntimeError'),
  };
}

function run(command: string, args: string[]): number {
  const result = spawnSync(command, args, { cwd: root, stdio: 'inherit' });
  return result.status ?? 1;
}

function main(): number {
  const started = Date.now();
  const npx = process.platform === 'win32' ? 'npx.cmd' : 'npx';
  // --summary: only the summary of the reports already there.
  const summaryOnly = process.argv.includes('--summary');
  const strykerStatus = summaryOnly ? 0 : run(npx, ['stryker', 'run']);
  const strykerSeconds = Math.round((Date.now() - started) / 1000);
  const cppStatus = summaryOnly ? 0 : run(npx, ['ts-node', '--transpile-only', path.join('scripts', 'mutate-cpp.ts')]);
  const lines = ['', 'Mutation testing summary'];
  if (fs.existsSync(STRYKER_REPORT)) {
    const s = strykerCounts(JSON.parse(fs.readFileSync(STRYKER_REPORT, 'utf8')));
    // As Stryker's own score: mutants rejected by tsc or that break a test file while it loads are left out.
    const valid = s.total - s.equivalent - s.compileErrors - s.runtimeErrors;
    const detected = s.killed + s.timeout;
    lines.push(
      `  TypeScript (Stryker): ${detected} of ${valid} non-equivalent mutants killed (${((100 * detected) / valid).toFixed(1)} %): ` +
        `${s.total} in all, ${s.killed} killed, ${s.timeout} timed out, ${s.survived} survived, ` +
        `${s.noCoverage} without coverage, ${s.equivalent} marked equivalent or GPU-only, ` +
        `${s.compileErrors} rejected by tsc, ${s.runtimeErrors} breaking a test file as it loads` +
        (summaryOnly ? '' : `; ${strykerSeconds} s`),
    );
  } else {
    lines.push(`  TypeScript (Stryker): no report (stryker exited with ${strykerStatus})`);
  }
  if (fs.existsSync(CPP_REPORT)) {
    const c = JSON.parse(fs.readFileSync(CPP_REPORT, 'utf8')) as {
      killed: number;
      total: number;
      seconds: number;
      outcomes: MutantOutcome[];
    };
    lines.push(
      `  C++ (scripted): ${c.killed} of ${c.total} mutants killed (${((100 * c.killed) / c.total).toFixed(1)} %); ${c.seconds} s`,
    );
  } else {
    lines.push(`  C++ (scripted): no report (mutate-cpp exited with ${cppStatus})`);
  }
  lines.push(`  total time ${Math.round((Date.now() - started) / 1000)} s`);
  console.log(lines.join('\n'));
  return strykerStatus === 0 && cppStatus === 0 ? 0 : 1;
}

if (require.main === module) process.exitCode = main();
