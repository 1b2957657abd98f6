/**
 * The build's LibTorch search (cmake/FindLibTorch.cmake) on bad choices: one accurate message each, naming what was
 * given. Runs CMake's configure step only (a few seconds each), in temporary folders.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const root = path.resolve(__dirname, '..');
const hasCmake = spawnSync('cmake', ['--version']).status === 0;
if (!hasCmake) console.warn('build configuration tests skipped: cmake is not installed');
const describeIf = hasCmake ? describe : describe.skip;

/** Configures the project with `env` added; returns CMake's exit status and its output on one line. */
function configure(env: Record<string, string>, args: string[] = []): { status: number | null; output: string } {
  const build = fs.mkdtempSync(path.join(os.tmpdir(), 'bce-configure-'));
  try {
    const clean = { ...process.env };
    for (const key of ['LIBTORCH', 'Torch_DIR', 'PYTHON']) delete clean[key];
    const result = spawnSync('cmake', ['-S', root, '-B', build, ...args], {
      env: { ...clean, ...env },
      encoding: 'utf8',
      timeout: 120_000,
    });
    return { status: result.status, output: `${result.stdout}${result.stderr}`.replace(/\s+/g, ' ') };
  } finally {
    fs.rmSync(build, { recursive: true, force: true });
  }
}

describeIf('LibTorch search: bad choices give one accurate message', () => {
  let scratch: string;
  beforeAll(() => {
    scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'bce-libtorch-'));
  });
  afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

  test('LIBTORCH set to a folder that is not a LibTorch', () => {
    const empty = path.join(scratch, 'empty');
    fs.mkdirSync(empty);
    const { status, output } = configure({ LIBTORCH: empty });
    expect(status).not.toBe(0);
    expect(output).toContain(`BCE_LIBTORCH_NOT_FOUND: LIBTORCH is set to '${empty}', which is not a LibTorch`);
  }, 120_000);

  test('LIBTORCH set to a Python torch package without LibTorch CMake files (as Debian ships python3-torch)', () => {
    const pkg = path.join(scratch, 'torch');
    fs.mkdirSync(pkg);
    fs.writeFileSync(path.join(pkg, '__init__.py'), '');
    const { status, output } = configure({ LIBTORCH: pkg });
    expect(status).not.toBe(0);
    expect(output).toContain(`LIBTORCH is set to '${pkg}', a Python \`torch\` package without LibTorch's CMake files`);
    // It does not ask for the very folder it was given.
    expect(output).not.toContain('Point it at');
  }, 120_000);

  test('PYTHON set to a Python that cannot import torch is named, and the system LibTorch is tried next', () => {
    const fake = path.join(scratch, 'python-without-torch');
    fs.writeFileSync(fake, '#!/bin/sh\necho "ModuleNotFoundError: No module named \'torch\'" >&2\nexit 1\n', {
      mode: 0o755,
    });
    const said = `PYTHON is set to '${fake}', which cannot import torch (ModuleNotFoundError: No module named 'torch')`;
    // (node-gyp sets PYTHON to its own interpreter, so this is not fatal while another LibTorch is found.)
    const { output } = configure({ PYTHON: fake });
    expect(output).toContain(`${said}. Trying the system's LibTorch.`);
    // With no LibTorch anywhere else (CMake told to ignore the system prefixes), the final message names it.
    const alone = configure({ PYTHON: fake }, ['-DCMAKE_IGNORE_PREFIX_PATH=/usr;/usr/local;/']);
    expect(alone.status).not.toBe(0);
    expect(alone.output).toContain(`BCE_LIBTORCH_NOT_FOUND: ${said}. No LibTorch found.`);
  }, 120_000);

  test('PYTHON set to a missing file', () => {
    const missing = path.join(scratch, 'no-such-python');
    const { status, output } = configure({ PYTHON: missing }, ['-DCMAKE_IGNORE_PREFIX_PATH=/usr;/usr/local;/']);
    expect(status).not.toBe(0);
    expect(output).toContain(`PYTHON is set to '${missing}', which cannot import torch`);
  }, 120_000);
});
