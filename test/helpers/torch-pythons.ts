/**
 * Every Python with torch that the format tests run against, whatever its torch version (unlike torch-python.ts,
 * which picks the one matching the addon): Debian's /usr/bin/python3 (torch 1.13) and the virtual environment
 * that `BCE_TORCH=pypi bash scripts/setup` makes (PyPI's torch 2.x). A missing one comes back with the reason.
 */
import { spawnSync } from 'child_process';
import * as os from 'os';
import * as path from 'path';

export interface TorchPythonEntry {
  /** What it is, for test names: 'debian' or 'pypi'. */
  label: string;
  /** The interpreter. */
  path: string;
  /** Its torch.__version__, or undefined when it has no working torch. */
  torchVersion?: string;
  /** Why it cannot be used, when torchVersion is undefined. */
  reason?: string;
}

function cacheDir(): string {
  return process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
}

export function listTorchPythons(): TorchPythonEntry[] {
  const candidates = [
    { label: 'debian', path: '/usr/bin/python3' },
    { label: 'pypi', path: path.join(cacheDir(), 'bootstrapped-ce', 'torch-pypi-latest', 'bin', 'python') },
  ];
  return candidates.map((c) => {
    const probe = spawnSync(c.path, ['-c', 'import torch; print(torch.__version__)'], {
      encoding: 'utf8',
      timeout: 120_000,
    });
    if (probe.status === 0) return { ...c, torchVersion: probe.stdout.trim() };
    const why = probe.error ? probe.error.message : (probe.stderr || '').trim().split('\n').pop();
    return { ...c, reason: `${c.path}: ${why}` };
  });
}

/** Runs `script` with `python`, arguments after it; returns stdout, or throws with stderr. */
export function runPython(python: string, script: string, args: string[] = []): string {
  const run = spawnSync(python, ['-c', script, ...args], {
    encoding: 'utf8',
    timeout: 120_000,
    maxBuffer: 64 * 2 ** 20,
  });
  if (run.status !== 0) throw new Error(`${python} failed (${run.status ?? run.signal}):\n${run.stderr}`);
  return run.stdout;
}
