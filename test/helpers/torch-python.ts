/**
 * Finds the Python whose PyTorch is the same version as the LibTorch the addon was built against, so that every
 * comparison with PyTorch (parity suites, optimizer parity, benchmark) runs the same library on both sides.
 *
 * Candidates, in order: `PYTHON` if set (and nothing else: an explicit choice must not silently fall back); else
 * the Python that owns the addon's LibTorch (a virtual environment or conda environment above the LibTorch folder
 * the addon records, e.g. the one `BCE_TORCH=pypi bash scripts/setup` makes), then /usr/bin/python3 (Debian's
 * python3-torch goes with Debian's libtorch-dev), then python3 on PATH. The first that imports torch of the
 * addon's version (major.minor.patch; local suffixes such as "+cu132" or "a0" aside) wins.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { info } from '../../lib/runtime';

export interface TorchPython {
  /** The interpreter, or null when none has torch of the addon's version. */
  path: string | null;
  /** Its torch.__version__. */
  torchVersion?: string;
  /** The addon's LibTorch version. */
  libtorchVersion: string;
  /** Why no interpreter was chosen: every candidate and what it said. */
  reason: string;
}

/** "2.15.0+cu132" -> "2.15.0"; "1.13.0a0" -> "1.13.0". */
export function releaseOf(version: string): string | undefined {
  return /^(\d+\.\d+\.\d+)/.exec(version)?.[1] ?? /^(\d+\.\d+)/.exec(version)?.[1];
}

/** The interpreter of the Python environment that holds `libtorchDir`, when it is inside one. */
export function ownerPython(libtorchDir: string): string | undefined {
  let dir = path.resolve(libtorchDir);
  for (;;) {
    const marker = ['pyvenv.cfg', 'conda-meta'].some((name) => fs.existsSync(path.join(dir, name)));
    if (marker) {
      const python = ['bin/python3', 'bin/python', 'python.exe']
        .map((p) => path.join(dir, p))
        .find((p) => fs.existsSync(p));
      if (python) return python;
    }
    const parent = path.dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

export function findTorchPython(explicit = process.env.PYTHON): TorchPython {
  const built = info();
  const want = releaseOf(built.libtorchVersion) ?? built.libtorchVersion;
  const candidates = explicit ? [explicit] : [ownerPython(built.builtAgainst), '/usr/bin/python3', 'python3'];
  const failures: string[] = [];
  for (const candidate of [...new Set(candidates.filter((c): c is string => !!c))]) {
    const probe = spawnSync(candidate, ['-c', 'import torch; print(torch.__version__)'], {
      encoding: 'utf8',
      timeout: 120_000,
    });
    if (probe.status !== 0) {
      const why = probe.error ? probe.error.message : (probe.stderr || '').trim().split('\n').pop();
      failures.push(`${candidate}: ${why}`);
      continue;
    }
    const version = probe.stdout.trim();
    if (releaseOf(version) === want)
      return { path: candidate, torchVersion: version, libtorchVersion: built.libtorchVersion, reason: '' };
    failures.push(`${candidate}: torch ${version}, not ${want}`);
  }
  return {
    path: null,
    libtorchVersion: built.libtorchVersion,
    reason:
      `no Python with torch ${want}, the LibTorch version the addon was built against (${failures.join('; ')}); ` +
      'set PYTHON to one',
  };
}
