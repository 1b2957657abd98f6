/**
 * Checks a prebuild's record (libtorch.json beside it, written by scripts/prebuild.js) against the LibTorch present
 * before the loader (loader.ts) tries it: the runtime libraries it needs must be found where the dynamic loader
 * searches (LD_LIBRARY_PATH, its rpath, /etc/ld.so.conf), with the same major.minor version, the same C++ ABI and
 * the same flavour (CPU or CUDA). Also ranks a platform's prebuilds: a flavour whose LibTorch is on
 * LD_LIBRARY_PATH goes first.
 *
 * Environment: `BOOTSTRAPPED_CE_FLAVOUR=cpu|cuda` refuses a prebuild of the other flavour.
 */
import * as fs from 'fs';
import * as path from 'path';

/** The file beside the prebuilds of a platform that records the LibTorch each was built against. */
const RECORD_NAME = 'libtorch.json';

/** What a build records about the LibTorch it was built against (CMakeLists.txt, scripts/prebuild.js). */
export interface LibTorchRecord {
  version?: string;
  /** false, true, or the CUDA version, e.g. "11.8". */
  cuda?: boolean | string;
  dir?: string;
  libDir?: string;
  /** LibTorch/CUDA shared libraries the binary needs (DT_NEEDED), e.g. "libtorch_cpu.so.1.13". */
  needed?: string[];
  binary?: string;
  napiVersion?: number;
  /** Whether it uses libstdc++'s C++11 ABI; null where there is no dual ABI (MSVC, libc++). */
  cxx11Abi?: boolean | null;
}

/** libtorch.json of a prebuild folder: one record per flavour (older packages: one record). */
interface PrebuildIndex extends LibTorchRecord {
  prebuilds?: LibTorchRecord[];
}

function flavourOf(record: LibTorchRecord): string {
  if (!record.cuda) return 'CPU';
  return typeof record.cuda === 'string' ? `CUDA ${record.cuda}` : 'CUDA';
}

function majorMinor(version: string | undefined): string | undefined {
  const m = /^(\d+)\.(\d+)/.exec(version ?? '');
  return m ? `${m[1]}.${m[2]}` : undefined;
}

function readJson(file: string): PrebuildIndex | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as PrebuildIndex;
  } catch {
    return undefined;
  }
}

function isDir(dir: string): boolean {
  try {
    return fs.statSync(dir).isDirectory();
  } catch {
    return false;
  }
}

/** Folders of /etc/ld.so.conf (and its includes): what ld.so.cache indexes. */
function ldSoConfDirs(file = '/etc/ld.so.conf', depth = 0): string[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  const dirs: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) continue;
    const include = /^include\s+(.+)$/.exec(line);
    if (include && depth < 4) {
      const pattern = include[1].trim();
      const folder = path.dirname(pattern);
      const suffix = path.basename(pattern).replace(/^\*/, '');
      let names: string[] = [];
      try {
        names = fs
          .readdirSync(folder)
          .filter((name) => name.endsWith(suffix))
          .sort();
      } catch {
        // no include folder
      }
      for (const name of names) dirs.push(...ldSoConfDirs(path.join(folder, name), depth + 1));
    } else if (line.startsWith('/')) {
      dirs.push(line);
    }
  }
  return dirs;
}

/** The folders of LD_LIBRARY_PATH (DYLD_LIBRARY_PATH on macOS), searched before everything else. */
export function libraryPathDirs(): string[] {
  const envVar = process.platform === 'darwin' ? 'DYLD_LIBRARY_PATH' : 'LD_LIBRARY_PATH';
  return (process.env[envVar] ?? '').split(path.delimiter).filter(Boolean);
}

/** Where the dynamic loader looks for a prebuild's libraries, in its order. */
function librarySearchDirs(record: LibTorchRecord, binaryDir: string): string[] {
  const fromEnv = libraryPathDirs();
  const rpath = [record.libDir, binaryDir].filter((d): d is string => !!d);
  const system =
    process.platform === 'linux'
      ? [...ldSoConfDirs(), '/lib', '/usr/lib', '/lib64', '/usr/lib64']
      : process.platform === 'darwin'
        ? ['/usr/local/lib', '/usr/lib', '/opt/homebrew/lib']
        : [];
  return [...new Set([...fromEnv, ...rpath, ...system].map((d) => path.resolve(d)))];
}

/** The libraries a record implies when it does not list them. */
function defaultNeeded(record: LibTorchRecord): string[] {
  const mm = majorMinor(record.version);
  const so = (name: string) => {
    if (process.platform === 'darwin') return `lib${name}.dylib`;
    if (process.platform === 'win32') return `${name}.dll`;
    return mm ? `lib${name}.so.${mm}` : `lib${name}.so`;
  };
  const libs = [so('c10'), so('torch_cpu')];
  if (record.cuda) libs.push(so('torch_cuda'));
  return libs;
}

/** The LibTorch version of the installation holding `libDir`, when it says. */
function installedVersion(libDir: string, library: string): string | undefined {
  // A versioned file name (Debian: libtorch_cpu.so.1.13 -> libtorch_cpu.so.1.13.1).
  try {
    const real = path.basename(fs.realpathSync(path.join(libDir, library)));
    const m = /\.so\.(\d+\.\d+(\.\d+)?)$/.exec(real) ?? /\.(\d+\.\d+(\.\d+)?)\.dylib$/.exec(real);
    if (m) return m[1];
  } catch {
    // fall through
  }
  // An unpacked LibTorch (build-version) or a PyTorch install (torch/version.py).
  try {
    return fs.readFileSync(path.join(libDir, '..', 'build-version'), 'utf8').trim();
  } catch {
    // fall through
  }
  try {
    const text = fs.readFileSync(path.join(libDir, '..', 'version.py'), 'utf8');
    return /__version__\s*=\s*['"]([^'"]+)['"]/.exec(text)?.[1];
  } catch {
    return undefined;
  }
}

/**
 * Whether a LibTorch library uses libstdc++'s C++11 ABI: its exported names then carry the `cxx11` ABI tag
 * (`B5cxx11`, `St7__cxx11`); a library built with `_GLIBCXX_USE_CXX11_ABI=0` has none. Undefined when unreadable.
 */
function usesCxx11Abi(file: string): boolean | undefined {
  try {
    const bytes = fs.readFileSync(file);
    return bytes.includes('B5cxx11') || bytes.includes('St7__cxx11');
  } catch {
    return undefined;
  }
}

function hasCudaLibrary(libDir: string): boolean {
  try {
    return fs.readdirSync(libDir).some((name) => /^(lib)?torch_cuda[._]/.test(name));
  } catch {
    return false;
  }
}

/**
 * Why a prebuild cannot be used with the LibTorch present here, or undefined when it can.
 * Checks: Node-API version, requested flavour, each needed library found, the found LibTorch's major.minor
 * version, and CPU vs CUDA.
 */
export function refusePrebuild(record: LibTorchRecord, binaryDir: string): string | undefined {
  const builtFor = `LibTorch ${record.version ?? '(unknown version)'} ${flavourOf(record)}`;
  const napi = Number(process.versions.napi ?? 0);
  if (record.napiVersion && napi < record.napiVersion) {
    return `it needs Node-API ${record.napiVersion}, this Node.js has ${napi}`;
  }
  const wanted = (process.env.BOOTSTRAPPED_CE_FLAVOUR ?? '').toLowerCase();
  if ((wanted === 'cuda' && !record.cuda) || (wanted === 'cpu' && record.cuda)) {
    return `it is built for ${builtFor}, and BOOTSTRAPPED_CE_FLAVOUR=${wanted} asks for ${wanted.toUpperCase()}`;
  }
  const dirs = librarySearchDirs(record, binaryDir);
  const needed = record.needed?.length ? record.needed : defaultNeeded(record);
  let torchDir: string | undefined;
  for (const library of needed) {
    const dir = dirs.find((d) => fs.existsSync(path.join(d, library)));
    if (!dir) {
      return (
        `it is built for ${builtFor} and needs ${library}, which is not in any folder the dynamic loader searches ` +
        `(${dirs.filter(isDir).join(', ')})`
      );
    }
    if (/torch_cpu/.test(library)) torchDir = dir;
  }
  if (torchDir) {
    const cpuLib = needed.find((l) => /torch_cpu/.test(l)) as string;
    const found = installedVersion(torchDir, cpuLib);
    const want = majorMinor(record.version);
    if (found && want && majorMinor(found) !== want) {
      return `it is built for ${builtFor}, but the LibTorch in ${torchDir} is ${found}`;
    }
    if (process.platform === 'linux' && typeof record.cxx11Abi === 'boolean') {
      const c10 = needed.find((l) => /^libc10\./.test(l));
      const abiHere = c10 ? usesCxx11Abi(path.join(torchDir, c10)) : undefined;
      if (abiHere !== undefined && abiHere !== record.cxx11Abi) {
        const name = (abi: boolean) => (abi ? 'the C++11 ABI' : 'the pre-C++11 ABI');
        return `it is built for ${builtFor} with ${name(record.cxx11Abi)}, but the LibTorch in ${torchDir} uses ${name(abiHere)}`;
      }
    }
    const cudaHere = hasCudaLibrary(torchDir);
    if (record.cuda && !cudaHere) {
      return `it is built for ${builtFor}, but the LibTorch in ${torchDir} has no CUDA (no libtorch_cuda)`;
    }
    if (!record.cuda && cudaHere && wanted !== 'cpu') {
      return (
        `it is built for ${builtFor}, but the LibTorch in ${torchDir} is a CUDA build: rebuild from source to use ` +
        'CUDA (`npm rebuild bootstrapped-ce`), or set BOOTSTRAPPED_CE_FLAVOUR=cpu to accept the CPU prebuild'
      );
    }
  }
  return undefined;
}

/** The prebuilds of this platform with their records. */
/**
 * The prebuilds of this platform in `prebuildsRoot` (a package's prebuilds/ folder) with their records, in the
 * order to try them.
 */
export function prebuildCandidates(prebuildsRoot: string): { file: string; record: LibTorchRecord | undefined }[] {
  const folder = path.join(prebuildsRoot, `${process.platform}-${process.arch}`);
  let names: string[];
  try {
    names = fs
      .readdirSync(folder)
      .filter((name) => name.endsWith('.node'))
      .sort();
  } catch {
    return [];
  }
  const index = readJson(path.join(folder, RECORD_NAME));
  const records = index?.prebuilds ?? (index ? [index] : []);
  const recordOf = (name: string) =>
    records.find((r) => r.binary === name) ?? (records.length === 1 && !records[0].binary ? records[0] : undefined);
  const listed = records.map((r) => r.binary).filter((n): n is string => !!n && names.includes(n));
  const candidates = [...listed, ...names.filter((n) => !listed.includes(n))].map((name) => ({
    file: path.join(folder, name),
    record: recordOf(name),
  }));
  // A flavour whose LibTorch is on LD_LIBRARY_PATH goes first: that is how a user says which LibTorch to use
  // when several are installed (say Debian's and a PyPI torch's).
  const fromEnv = libraryPathDirs();
  const onLibraryPath = (record: LibTorchRecord | undefined) => {
    const cpuLib = (record?.needed ?? []).find((l) => /torch_cpu/.test(l));
    return (
      !!cpuLib &&
      fromEnv.some(
        (dir) =>
          fs.existsSync(path.join(dir, cpuLib)) &&
          installedVersion(dir, cpuLib)?.startsWith(`${majorMinor(record?.version)}.`),
      )
    );
  };
  const first = new Set(candidates.filter((c) => onLibraryPath(c.record)));
  return [...first, ...candidates.filter((c) => !first.has(c))];
}
