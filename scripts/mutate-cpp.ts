/**
 * `npm run mutate:cpp`: scripted mutants of the C++ loss core (test/mutation/cpp-mutants.json). The repository is
 * copied to a scratch folder outside it (under the OS temp folder), built there once, and the listed jest files
 * are checked to pass; then each mutant in turn: its one replacement applied to the scratch copy (a text not found
 * exactly once fails the run, naming the mutant), the addon rebuilt incrementally (ccache, CCACHE_BASEDIR the
 * scratch folder's parent), the jest files run in order until one fails (killed) or all pass (survived), and the
 * file restored. Writes reports/mutation/cpp.json and prints the kill rate.
 *
 *   npm run mutate:cpp [-- --only id1,id2] [--scratch DIR] [--no-baseline-tests (when the tests just passed)]
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

interface Mutant {
  id: string;
  file: string;
  find: string;
  replace: string;
  models: string;
}

interface MutantList {
  tests: string[];
  mutants: Mutant[];
}

export interface MutantOutcome {
  id: string;
  models: string;
  status: 'killed' | 'survived' | 'build failed';
  /** The jest file that failed first (killed). */
  killedBy?: string;
  seconds: number;
}

const root = path.join(__dirname, '..');
const LIST = path.join(root, 'test', 'mutation', 'cpp-mutants.json');
export const CPP_REPORT = path.join(root, 'reports', 'mutation', 'cpp.json');

function option(name: string): string | undefined {
  const at = process.argv.indexOf(name);
  return at >= 0 ? process.argv[at + 1] : undefined;
}

/** Checks every mutant's text before anything is built: each must occur exactly once in its file. */
function checkTexts(list: MutantList): void {
  const problems: string[] = [];
  for (const m of list.mutants) {
    const file = path.join(root, m.file);
    const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : null;
    const count = text === null ? -1 : text.split(m.find).length - 1;
    if (count !== 1) {
      problems.push(
        `mutant '${m.id}': ${count < 0 ? `${m.file} does not exist` : `its text occurs ${count} times in ${m.file}`}`,
      );
    }
  }
  if (problems.length > 0) {
    throw new Error(`mutate-cpp: the mutant list does not fit the sources:\n  ${problems.join('\n  ')}`);
  }
}

/** Copied, not linked: the packages whose headers the build includes, and cmake-js, which finds node-api-headers
 * from where it lies. */
const HEADER_PACKAGES = ['node-addon-api', 'node-api-headers', 'cmake-js'];

/** Copies the repository's files (tracked and untracked, not ignored) where they differ, keeping mtimes otherwise. */
function syncScratch(scratch: string): void {
  const listed = spawnSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], {
    cwd: root,
    encoding: 'utf8',
  });
  if (listed.status !== 0) throw new Error(`mutate-cpp: git ls-files failed: ${listed.stderr}`);
  for (const relative of listed.stdout.split('\0').filter(Boolean)) {
    const from = path.join(root, relative);
    if (!fs.existsSync(from) || !fs.statSync(from).isFile()) continue;
    const to = path.join(scratch, relative);
    const content = fs.readFileSync(from);
    if (fs.existsSync(to) && fs.readFileSync(to).equals(content)) continue;
    fs.mkdirSync(path.dirname(to), { recursive: true });
    fs.writeFileSync(to, content);
  }
  // node_modules: links to the repository's packages, except HEADER_PACKAGES, copied so that the include paths lie
  // under CCACHE_BASEDIR like the repository's own build's (same relative paths, so ccache hits).
  const modules = path.join(scratch, 'node_modules');
  fs.mkdirSync(modules, { recursive: true });
  for (const entry of fs.readdirSync(path.join(root, 'node_modules'))) {
    const to = path.join(modules, entry);
    const copied = HEADER_PACKAGES.includes(entry);
    if (fs.existsSync(to) && fs.lstatSync(to).isSymbolicLink() === !copied) continue;
    fs.rmSync(to, { recursive: true, force: true });
    if (copied) fs.cpSync(path.join(root, 'node_modules', entry), to, { recursive: true });
    else fs.symlinkSync(path.join(root, 'node_modules', entry), to);
  }
}

function build(scratch: string): { ok: boolean; output: string } {
  const result = spawnSync(process.execPath, ['scripts/install.js'], {
    cwd: scratch,
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
    env: { ...process.env, CMAKE_CXX_COMPILER_LAUNCHER: 'ccache', CCACHE_BASEDIR: path.dirname(scratch) },
  });
  return { ok: result.status === 0, output: `${result.stdout}${result.stderr}` };
}

/** Runs the jest files in order; returns the first that fails, or null when all pass. */
function firstFailing(scratch: string, tests: string[]): string | null {
  for (const test of tests) {
    const result = spawnSync(process.execPath, [path.join(root, 'node_modules', 'jest', 'bin', 'jest.js'), test], {
      cwd: scratch,
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
      timeout: 600000,
      env: { ...process.env, BOOTSTRAPPED_CE_BINARY: path.join(scratch, 'build', 'Release', 'bootstrapped_ce.node') },
    });
    if (result.status !== 0) return test;
  }
  return null;
}

function main(): number {
  const list = JSON.parse(fs.readFileSync(LIST, 'utf8')) as MutantList;
  checkTexts(list);
  const only = option('--only')?.split(',');
  const mutants = only ? list.mutants.filter((m) => only.includes(m.id)) : list.mutants;
  if (only && mutants.length !== only.length) throw new Error(`mutate-cpp: unknown mutant in --only ${only}`);
  const scratch = path.resolve(option('--scratch') ?? path.join(os.tmpdir(), 'bootstrapped-ce-mutants', 'repo'));
  const started = Date.now();
  console.log(`mutate-cpp: ${mutants.length} mutants; scratch copy ${scratch}`);
  syncScratch(scratch);
  const baseline = build(scratch);
  if (!baseline.ok) throw new Error(`mutate-cpp: the unmutated scratch copy does not build:\n${baseline.output}`);
  if (!process.argv.includes('--no-baseline-tests')) {
    const failing = firstFailing(scratch, list.tests);
    if (failing !== null) throw new Error(`mutate-cpp: ${failing} fails without any mutant; fix that first`);
  }
  console.log(`mutate-cpp: baseline built and checked in ${((Date.now() - started) / 1000).toFixed(0)} s`);

  const outcomes: MutantOutcome[] = [];
  for (const m of mutants) {
    const t0 = Date.now();
    const file = path.join(scratch, m.file);
    const original = fs.readFileSync(path.join(root, m.file), 'utf8');
    fs.writeFileSync(
      file,
      original.replace(m.find, () => m.replace),
    );
    let outcome: MutantOutcome;
    try {
      const built = build(scratch);
      const killedBy = built.ok ? firstFailing(scratch, list.tests) : null;
      outcome = {
        id: m.id,
        models: m.models,
        status: !built.ok ? 'build failed' : killedBy ? 'killed' : 'survived',
        ...(killedBy ? { killedBy } : {}),
        seconds: Math.round((Date.now() - t0) / 1000),
      };
    } finally {
      fs.writeFileSync(file, original);
    }
    outcomes.push(outcome);
    console.log(
      `mutate-cpp: ${outcome.status.padEnd(12)} ${m.id}${outcome.killedBy ? ` (by ${outcome.killedBy})` : ''}, ${outcome.seconds} s`,
    );
  }
  build(scratch); // leaves the scratch copy unmutated

  const killed = outcomes.filter((o) => o.status === 'killed').length;
  const seconds = Math.round((Date.now() - started) / 1000);
  fs.mkdirSync(path.dirname(CPP_REPORT), { recursive: true });
  fs.writeFileSync(CPP_REPORT, `${JSON.stringify({ killed, total: outcomes.length, seconds, outcomes }, null, 2)}\n`);
  console.log(`mutate-cpp: ${killed} of ${outcomes.length} C++ mutants killed in ${seconds} s (${CPP_REPORT})`);
  for (const o of outcomes.filter((x) => x.status !== 'killed')) console.log(`  ${o.status}: ${o.id}: ${o.models}`);
  return killed === outcomes.length ? 0 : 1;
}

if (require.main === module) {
  try {
    process.exitCode = main();
  } catch (error) {
    console.error(error instanceof Error ? error.message : error);
    process.exitCode = 2;
  }
}
