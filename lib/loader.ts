/**
 * Loads the native addon; the only file that `require`s a `.node`. Order:
 *   1. an explicit binary: `BOOTSTRAPPED_CE_BINARY`;
 *   2. a prebuild for this platform (prebuilds/<platform>-<arch>/, made by `npm run prebuild`), unless
 *      prebuild-check.ts refuses it for the LibTorch present;
 *   3. a local build found by `bindings` (build/Release, ...); it goes before the prebuild when it is newer (a
 *      build made after the prebuild: a developer's rebuild, or `npm rebuild --build-from-source`).
 * Every failure is collected and reported in one actionable message (how to install LibTorch or build from
 * source).
 *
 * Environment: `BOOTSTRAPPED_CE_PREBUILDS_ONLY=1` tries prebuilds only (the install script's check).
 */
import * as fs from 'fs';
import * as path from 'path';
import bindings from 'bindings';
import type { NativeAddon } from './native';
import { prebuildCandidates, refusePrebuild } from './prebuild-check';

/** The package root (one level above lib/ or dist/). */
export const packageRoot = path.resolve(__dirname, '..');

const BINARY_NAME = 'bootstrapped_ce.node';

interface Attempt {
  file: string;
  how: string;
  error: string;
}

function message(error: unknown): string {
  return String((error as Error)?.message ?? error)
    .split('\n')
    .filter((line) => line.trim() && !/^\s+at /.test(line) && !/^Require stack:/.test(line) && !/^- /.test(line))
    .join(' ');
}

/** The shared library a dlopen error names as missing, e.g. "libtorch_cpu.so.1.13". */
function missingLibrary(errors: string[]): string | undefined {
  for (const error of errors) {
    const m =
      /([^\s:/]+\.(?:so(?:\.[\d.]+)?|dylib|dll)): cannot open shared object file/.exec(error) ??
      /Library not loaded: \S*?([^/\s]+\.dylib)/.exec(error) ??
      /needs (\S+\.(?:so(?:\.[\d.]+)?|dylib|dll)), which is not/.exec(error);
    if (m) return m[1];
  }
  return undefined;
}

function describeFailure(attempts: Attempt[]): string {
  const errors = attempts.map((a) => a.error);
  const missing = missingLibrary(errors);
  const platform = `${process.platform}-${process.arch}`;
  const lines = [
    'bootstrapped-ce: could not load the native addon.',
    'Tried:',
    ...(attempts.length
      ? attempts.map((a) => `  - ${a.file} (${a.how}): ${a.error}`)
      : ['  - nothing: no binary found']),
  ];
  if (missing) {
    const mm = /\.so\.(\d+\.\d+)/.exec(missing)?.[1];
    lines.push(
      `Missing LibTorch runtime library: ${missing}${mm ? ` (LibTorch ${mm})` : ''}.`,
      mm === '1.13'
        ? '  Get it: `sudo apt-get install libtorch-dev` (Debian 12 / Ubuntu 23.04+: LibTorch 1.13); or a PyTorch install /'
        : '  Get it: a PyTorch install or an unpacked LibTorch (pytorch.org) of that version and flavour,',
      mm === '1.13'
        ? '  an unpacked LibTorch of that version, with its lib folder on LD_LIBRARY_PATH'
        : '  with its lib folder on LD_LIBRARY_PATH',
      `  (e.g. export LD_LIBRARY_PATH=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib).`,
    );
  }
  let platforms: string[] = [];
  try {
    platforms = fs.readdirSync(path.join(packageRoot, 'prebuilds')).sort();
  } catch {
    // no prebuilds folder
  }
  lines.push(
    'Possible solutions:',
    platforms.includes(platform)
      ? `  - The prebuild for ${platform} records the LibTorch it needs in prebuilds/${platform}/libtorch.json: make that LibTorch\n` +
          '    available (above), or build against the LibTorch you have.'
      : `  - No prebuild for ${platform}${platforms.length ? ` (prebuilds: ${platforms.join(', ')})` : ''}: build from source.`,
    '  - Build from source: `npm rebuild bootstrapped-ce --build-from-source` (needs cmake >= 3.19, a C++17 compiler',
    '    and LibTorch; set LIBTORCH to an unpacked LibTorch or to the `torch` folder of a PyTorch install).',
    '  - Point BOOTSTRAPPED_CE_BINARY at a built bootstrapped_ce.node.',
  );
  return lines.join('\n');
}

function mtime(file: string): number {
  try {
    return fs.statSync(file).mtimeMs;
  } catch {
    return 0;
  }
}

function load(): { addon: NativeAddon; file: string } {
  const attempts: Attempt[] = [];
  const prebuildsOnly = process.env.BOOTSTRAPPED_CE_PREBUILDS_ONLY === '1';
  const explicit = process.env.BOOTSTRAPPED_CE_BINARY;
  if (explicit && !prebuildsOnly) {
    const file = path.resolve(explicit);
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- a .node file loads only through require
      return { addon: require(file) as NativeAddon, file };
    } catch (error) {
      attempts.push({ file, how: 'BOOTSTRAPPED_CE_BINARY', error: message(error) });
    }
  }
  const tryPrebuilds = (): { addon: NativeAddon; file: string } | undefined => {
    for (const { file, record } of prebuilds) {
      const refusal = refusePrebuild(record ?? {}, path.dirname(file));
      if (refusal) {
        attempts.push({ file, how: 'prebuild, not loaded', error: `refused: ${refusal}` });
        continue;
      }
      try {
        // eslint-disable-next-line @typescript-eslint/no-require-imports -- a .node file loads only through require
        return { addon: require(file) as NativeAddon, file };
      } catch (error) {
        attempts.push({ file, how: 'prebuild', error: message(error) });
      }
    }
    return undefined;
  };
  // A local build: build/Release, build/Debug and the other places `bindings` knows.
  const tryLocal = (): { addon: NativeAddon; file: string } | undefined => {
    const file = localBuildPath();
    try {
      const addon = bindings({ bindings: BINARY_NAME, module_root: packageRoot }) as NativeAddon;
      return { addon, file };
    } catch (error) {
      const built = file !== BINARY_NAME;
      attempts.push({
        file: built ? file : `${BINARY_NAME} in build/Release, build/Debug, ...`,
        how: 'local build',
        error: built ? message(error) : 'not built',
      });
      return undefined;
    }
  };
  const prebuilds = prebuildCandidates(path.join(packageRoot, 'prebuilds'));
  if (prebuildsOnly) return tryPrebuilds() ?? fail(attempts);
  // Prebuilds first, unless a local build is newer than them (rebuilt after packing, or --build-from-source).
  const local = localBuildPath();
  const localNewer = local !== BINARY_NAME && prebuilds.every((p) => mtime(local) > mtime(p.file));
  const found = localNewer ? (tryLocal() ?? tryPrebuilds()) : (tryPrebuilds() ?? tryLocal());
  return found ?? fail(attempts);
}

function fail(attempts: Attempt[]): never {
  throw new Error(describeFailure(attempts));
}

function localBuildPath(): string {
  for (const folder of ['build/Release', 'build/Debug', 'build']) {
    const file = path.join(packageRoot, folder, BINARY_NAME);
    if (fs.existsSync(file)) return file;
  }
  return BINARY_NAME;
}

/**
 * The environment variables the native code reads accept fixed values; another value is ignored there (the
 * default applies), so a misspelling would go unnoticed: warn once, at load.
 */
const ENVIRONMENT_CHOICES: Record<string, readonly string[]> = {
  BOOTSTRAPPED_CE_CPU_KERNELS: ['avx512', 'avx2', 'baseline'],
  BOOTSTRAPPED_CE_CPU_ALLOCATOR: ['default'],
};
function warnAboutEnvironment(): void {
  for (const [name, choices] of Object.entries(ENVIRONMENT_CHOICES)) {
    const value = process.env[name];
    if (value === undefined || value === '' || choices.includes(value)) continue;
    process.emitWarning(
      `${name}=${JSON.stringify(value)} is not one of ${choices.map((c) => `'${c}'`).join(', ')}; ignored (the default applies)`,
      {
        code: 'BOOTSTRAPPED_CE_ENV',
      },
    );
  }
}

/** Loads the addon (see the order above) and warns about misspelt environment settings; throws if none loads. */
export function loadAddon(): { addon: NativeAddon; file: string } {
  const loaded = load();
  warnAboutEnvironment();
  return loaded;
}
