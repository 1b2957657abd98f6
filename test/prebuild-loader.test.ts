/**
 * The loader's choice among prebuild flavours (lib/loader.ts, with the checks of lib/prebuild-check.ts): a prebuild
 * whose record does not match the LibTorch present (version, C++ ABI, CUDA) is refused with a message saying why,
 * never loaded; one that matches loads.
 * Runs the compiled loader (dist/) from a temporary package folder whose prebuilds are copies of this checkout's
 * build, with records written here, in child processes.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const root = path.resolve(__dirname, '..');
const built = path.join(root, 'build', 'Release');
const record = JSON.parse(fs.readFileSync(path.join(built, 'libtorch.json'), 'utf8'));
const runnable = process.platform === 'linux' && fs.existsSync(path.join(root, 'dist', 'native.js'));
if (!runnable)
  console.warn('prebuild loader tests skipped: Linux only, and they need the compiled dist/ (npm run build:ts)');
const describeIf = runnable ? describe : describe.skip;

/** A package folder with dist/ and the given prebuilds (each a copy of this build with the given record). */
function packageWith(records: Record<string, unknown>[]): string {
  const pkg = fs.mkdtempSync(path.join(os.tmpdir(), 'bce-loader-'));
  fs.cpSync(path.join(root, 'dist'), path.join(pkg, 'dist'), { recursive: true });
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(pkg, 'node_modules'));
  fs.copyFileSync(path.join(root, 'package.json'), path.join(pkg, 'package.json'));
  const folder = path.join(pkg, 'prebuilds', `${process.platform}-${process.arch}`);
  fs.mkdirSync(folder, { recursive: true });
  for (const r of records)
    fs.copyFileSync(path.join(built, 'bootstrapped_ce.node'), path.join(folder, r.binary as string));
  fs.writeFileSync(path.join(folder, 'libtorch.json'), JSON.stringify({ prebuilds: records }));
  return pkg;
}

function load(pkg: string): { ok: boolean; text: string } {
  const script = `try { const m = require(${JSON.stringify(path.join(pkg, 'dist', 'native.js'))}); process.stdout.write('loaded ' + m.nativeBinaryPath); } catch (e) { process.stdout.write(String(e.message)); process.exitCode = 3; }`;
  const env: NodeJS.ProcessEnv = { ...process.env, BOOTSTRAPPED_CE_PREBUILDS_ONLY: '1' };
  delete env.BOOTSTRAPPED_CE_BINARY;
  delete env.LD_LIBRARY_PATH;
  const child = spawnSync(process.execPath, ['-e', script], { env, encoding: 'utf8', timeout: 60_000 });
  return { ok: child.status === 0, text: `${child.stdout}${child.stderr}` };
}

describeIf('prebuild flavours: the loader refuses a mismatch with a reason, loads a match', () => {
  // The unversioned names exist for Debian's libtorch-dev and for a PyPI torch alike.
  const needed = ['libc10.so', 'libtorch_cpu.so'];
  const base = { ...record, needed, napiVersion: 8 };
  const dirs: string[] = [];
  afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

  test('wrong major.minor, wrong ABI and CUDA without CUDA are each refused, naming the reason', () => {
    const [major, minor] = String(record.version).split('.').map(Number);
    const pkg = packageWith([
      { ...base, binary: 'a.napi.node', version: `${major}.${minor + 1}.0` },
      { ...base, binary: 'b.napi.node', cxx11Abi: !record.cxx11Abi },
      { ...base, binary: 'c.napi.node', cuda: !record.cuda },
    ]);
    dirs.push(pkg);
    const { ok, text } = load(pkg);
    expect(ok).toBe(false);
    expect(text).toMatch(
      new RegExp(
        `a\\.napi\\.node \\(prebuild, not loaded\\): refused: it is built for LibTorch ${major}\\.${minor + 1}\\.0 .* but the LibTorch in \\S+ is ${major}\\.${minor}`,
      ),
    );
    expect(text).toMatch(
      /b\.napi\.node \(prebuild, not loaded\): refused: .* with the (pre-)?C\+\+11 ABI, but the LibTorch in \S+ uses the (pre-)?C\+\+11 ABI/,
    );
    expect(text).toMatch(
      record.cuda
        ? /c\.napi\.node \(prebuild, not loaded\): refused: .* is a CUDA build: rebuild from source/
        : /c\.napi\.node \(prebuild, not loaded\): refused: .* has no CUDA/,
    );
  });

  test('the matching flavour loads, after the refused ones', () => {
    const [major, minor] = String(record.version).split('.').map(Number);
    const pkg = packageWith([
      { ...base, binary: 'a.napi.node', version: `${major}.${minor + 1}.0` },
      { ...base, binary: 'good.napi.node' },
    ]);
    dirs.push(pkg);
    const { ok, text } = load(pkg);
    expect(text).toMatch(/^loaded .*good\.napi\.node$/);
    expect(ok).toBe(true);
  });
});
