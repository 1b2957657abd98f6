/**
 * The layering rules (CONTRIBUTING.md, "Architecture"): the loss core (cpp/loss/) and the process-wide runtime
 * (cpp/runtime/) are plain LibTorch and never see N-API, so that they can be used and tested without Node; and
 * they include nothing from the layers above them (cpp/napi/, cpp/objects/, cpp/functions/). On the TypeScript
 * side, scripts may import test helpers but the tests import nothing from scripts/.
 */
import * as fs from 'fs';
import * as path from 'path';

const root = path.resolve(__dirname, '..');
const cpp = path.join(root, 'cpp');

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const file = path.join(dir, entry.name);
    if (entry.isDirectory()) return sources(file);
    return /\.(cc|h|hpp|cpp)$/.test(entry.name) ? [file] : [];
  });
}

/** The quoted or angled include targets of a source file. */
function includes(file: string): string[] {
  return [...fs.readFileSync(file, 'utf8').matchAll(/^\s*#\s*include\s*[<"]([^>"]+)[>"]/gm)].map((m) => m[1]);
}

const lowerLayers = ['loss', 'runtime', 'serialize'];
const upperLayers = ['napi', 'objects', 'functions'];

describe.each(lowerLayers)('cpp/%s', (layer) => {
  const files = sources(path.join(cpp, layer));

  test('holds sources', () => {
    expect(files.length).toBeGreaterThan(0);
  });

  test('includes no N-API header', () => {
    const offenders = files.filter((file) =>
      includes(file).some((target) => /^(napi|node_api|node_api_types|js_native_api)\.h$/.test(target)),
    );
    expect(offenders.map((file) => path.relative(cpp, file))).toEqual([]);
  });

  test('includes nothing from the N-API layers above it', () => {
    const offenders = files.flatMap((file) =>
      includes(file)
        .filter((target) => upperLayers.some((upper) => target.startsWith(`${upper}/`)))
        .map((target) => `${path.relative(cpp, file)} -> ${target}`),
    );
    expect(offenders).toEqual([]);
  });
});

test('every source lives in a layer folder', () => {
  const stray = fs
    .readdirSync(cpp, { withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => entry.name);
  expect(stray).toEqual([]);
  const folders = fs
    .readdirSync(cpp, { withFileTypes: true })
    .filter((entry) => entry.isDirectory())
    .map((entry) => entry.name)
    .sort();
  expect(folders).toEqual([...lowerLayers, ...upperLayers].sort());
});

/** The TypeScript and JavaScript files under `dir`, recursively. */
function scriptFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const file = path.join(dir, entry.name);
    if (entry.isDirectory()) return scriptFiles(file);
    return /\.(ts|js|mjs|cjs)$/.test(entry.name) ? [file] : [];
  });
}

/** The relative module specifiers a file imports, exports from or requires, resolved to absolute paths. */
function relativeImports(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  const specifiers = [
    ...text.matchAll(/\b(?:import|export)\b[^'"`;]*?\bfrom\s*['"]([^'"]+)['"]/g),
    ...text.matchAll(/\bimport\s*['"]([^'"]+)['"]/g),
    ...text.matchAll(/\b(?:require|import)\s*\(\s*['"]([^'"]+)['"]\s*\)/g),
  ].map((m) => m[1]);
  return specifiers.filter((s) => s.startsWith('.')).map((s) => path.resolve(path.dirname(file), s));
}

describe('test/', () => {
  const files = scriptFiles(path.join(root, 'test'));
  const scripts = path.join(root, 'scripts');

  test('the import scan sees the relative imports', () => {
    const own = relativeImports(__filename);
    expect(own).toEqual([]);
    const parity = relativeImports(path.join(root, 'test', 'parity.test.ts'));
    expect(parity).toEqual(expect.arrayContaining([path.join(root, 'test', 'parity', 'grid'), path.join(root, 'lib')]));
  });

  test('imports nothing from scripts/', () => {
    const offenders = files.flatMap((file) =>
      relativeImports(file)
        .filter((target) => target === scripts || target.startsWith(`${scripts}${path.sep}`))
        .map((target) => `${path.relative(root, file)} -> ${path.relative(root, target)}`),
    );
    expect(offenders).toEqual([]);
  });
});
