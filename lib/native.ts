/**
 * Loads the native addon. Order:
 *   1. an explicit binary: `BOOTSTRAPPED_CE_BINARY`;
 *   2. a prebuild for this platform (prebuilds/<platform>-<arch>/, made by `npm run prebuild`), after checking
 *      the LibTorch it records (libtorch.json beside it) against the LibTorch present: the runtime libraries it
 *      needs must be found with the same major.minor version and the same flavour (CPU or CUDA);
 *   3. a local build found by `bindings` (build/Release, ...); it goes before the prebuild when it is newer (a
 *      build made after the prebuild: a developer's rebuild, or `npm rebuild --build-from-source`).
 * Every failure is collected and reported in one actionable message.
 *
 * Environment: `BOOTSTRAPPED_CE_PREBUILDS_ONLY=1` tries prebuilds only (the install script's check);
 * `BOOTSTRAPPED_CE_FLAVOUR=cpu|cuda` refuses a prebuild of the other flavour.
 */
import * as fs from 'fs';
import * as path from 'path';
import bindings from 'bindings';

/** The package root (one level above lib/ or dist/). */
export const packageRoot = path.resolve(__dirname, '..');

/** Methods of the native TensorHandle (cpp/objects/tensor_handle.cc). */
export interface NativeHandle {
  shape(): number[];
  dtype(): string;
  device(): string;
  numel(): number;
  requiresGrad(): boolean;
  setRequiresGrad(flag: boolean): void;
  grad(): NativeHandle | null;
  toArray(): Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array;
  item(): number | boolean;
  to(target: string): NativeHandle;
  detach(): NativeHandle;
  reshape(shape: number[]): NativeHandle;
  sum(dim?: number[], keepdim?: boolean): NativeHandle;
  mean(dim?: number[], keepdim?: boolean): NativeHandle;
  add(other: NativeHandle | number): NativeHandle;
  sub(other: NativeHandle | number): NativeHandle;
  mul(other: NativeHandle | number): NativeHandle;
  div(other: NativeHandle | number): NativeHandle;
  backward(gradient?: NativeHandle, retainGraph?: boolean): void;
  dispose(): void;
  isDisposed(): boolean;
}

/** The reductions the native losses take: 'selected' returns the 1-D tensor of selected losses. */
export type NativeReduction = 'mean' | 'sum' | 'none' | 'selected';

/** A native loss's result with the statistics it wrote into the caller's Float64Array. */
export interface NativeLossResult {
  loss: NativeHandle;
  k: number;
  nValid: number;
  fused: boolean;
}

/** Methods of the native ProcessGroupHandle (cpp/objects/process_group.cc); `wait` false returns a Promise. */
export interface NativeProcessGroup {
  init(rank: number, worldSize: number, masterAddr: string, masterPort: number, timeoutMs: number): Promise<void>;
  allReduce(tensor: NativeHandle, op: string, wait: boolean): Promise<void> | void;
  broadcast(tensor: NativeHandle, src: number, wait: boolean): Promise<void> | void;
  allGather(tensor: NativeHandle, wait: boolean): Promise<NativeHandle[]> | NativeHandle[];
  barrier(wait: boolean): Promise<void> | void;
  averageGradients(params: NativeHandle[], bucketBytes: number, wait: boolean): Promise<void> | void;
  broadcastTensors(tensors: NativeHandle[], src: number, bucketBytes: number, wait: boolean): Promise<void> | void;
  destroy(): void;
}

export interface NativeAddon {
  fromData(data: ArrayBufferView, shape: number[], dtype: string, device: string): NativeHandle;
  zeros(shape: number[], dtype: string, device: string): NativeHandle;
  ones(shape: number[], dtype: string, device: string): NativeHandle;
  randn(shape: number[], dtype: string, device: string): NativeHandle;
  randint(low: number, high: number, shape: number[], dtype: string, device: string): NativeHandle;
  manualSeed(seed: number): void;
  cudaIsAvailable(): boolean;
  cudaDeviceCount(): number;
  setNumThreads(threads: number): void;
  getNumThreads(): number;
  info(): {
    libtorchVersion: string;
    cudaBuild: boolean;
    cxx11Abi: boolean;
    cxxStandard: string;
    builtAgainst: string;
    loadedFrom: string;
    napiVersion: number;
    parallelInfo: string;
    cpuKernels: 'avx512' | 'avx2' | 'baseline';
  };
  memory(): { tensors: number; bytes: number; reportedBytes: number };
  cpuBlockCacheInfo(): { enabled: boolean; bytes: number; blocks: number; limit: number };
  emptyCpuBlockCache(): void;
  setCpuBlockCacheLimit(bytes: number): void;
  // The losses take positional options (cheaper to read natively than an object: cpp/functions/losses.cc) and write
  // [k, nValid, fused (1 or 0)] into `stats`.
  bootstrappedCrossEntropy(
    input: NativeHandle,
    target: NativeHandle,
    weight: NativeHandle | undefined,
    p: number,
    ignoreIndex: number,
    labelSmoothing: number,
    reduction: NativeReduction,
    perSample: boolean,
    impl: 'auto' | 'fused' | 'reference',
    stats: Float64Array,
  ): NativeHandle;
  bootstrappedBinaryCrossEntropy(
    input: NativeHandle,
    target: NativeHandle,
    weight: NativeHandle | undefined,
    posWeight: NativeHandle | undefined,
    p: number,
    reduction: NativeReduction,
    perSample: boolean,
    withLogits: boolean,
    stats: Float64Array,
  ): NativeHandle;
  crossEntropy(
    input: NativeHandle,
    target: NativeHandle,
    weight: NativeHandle | undefined,
    ignoreIndex: number,
    labelSmoothing: number,
    reduction: 'mean' | 'sum' | 'none',
  ): NativeHandle;
  // Distributed training (cpp/objects/process_group.cc); ProcessGroupHandle exists only in builds with Gloo.
  distributedInfo(): { available: boolean; reason: string; backends: string[] };
  ProcessGroupHandle?: new () => NativeProcessGroup;
  // The bootstrapped losses with the selection over every rank; stats gets [k, nValid, fused, bytes, rounds].
  globalBootstrappedCrossEntropy(
    group: NativeProcessGroup,
    input: NativeHandle,
    target: NativeHandle,
    weight: NativeHandle | undefined,
    p: number,
    ignoreIndex: number,
    labelSmoothing: number,
    reduction: NativeReduction,
    stats: Float64Array,
  ): NativeHandle;
  globalBootstrappedBinaryCrossEntropy(
    group: NativeProcessGroup,
    input: NativeHandle,
    target: NativeHandle,
    weight: NativeHandle | undefined,
    posWeight: NativeHandle | undefined,
    p: number,
    reduction: NativeReduction,
    withLogits: boolean,
    stats: Float64Array,
  ): NativeHandle;
}

const BINARY_NAME = 'bootstrapped_ce.node';
const RECORD_NAME = 'libtorch.json';

/** What a build records about the LibTorch it was built against (CMakeLists.txt, scripts/prebuild.js). */
interface LibTorchRecord {
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

interface Attempt {
  file: string;
  how: string;
  error: string;
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
function libraryPathDirs(): string[] {
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
function refusePrebuild(record: LibTorchRecord, binaryDir: string): string | undefined {
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
function prebuildCandidates(): { file: string; record: LibTorchRecord | undefined }[] {
  const folder = path.join(packageRoot, 'prebuilds', `${process.platform}-${process.arch}`);
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
  const prebuilds = prebuildCandidates();
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

const loaded = load();

/** The native addon of this environment (main thread or worker). */
export const native: NativeAddon = loaded.addon;
/** The file it was loaded from. */
export const nativeBinaryPath: string = loaded.file;

/**
 * The environment variables the native code reads accept fixed values; another value is ignored there (the
 * default applies), so a misspelling would go unnoticed: warn once, at load.
 */
const ENVIRONMENT_CHOICES: Record<string, readonly string[]> = {
  BOOTSTRAPPED_CE_CPU_KERNELS: ['avx512', 'avx2', 'baseline'],
  BOOTSTRAPPED_CE_CPU_ALLOCATOR: ['default'],
};
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
