/**
 * The layering rule: the loss core (cpp/loss/) is plain LibTorch and never sees N-API, so that it can be used
 * and tested without Node. Any file under it that includes napi.h (or node_api.h) fails this test.
 */
import * as fs from 'fs';
import * as path from 'path';

const core = path.resolve(__dirname, '..', 'cpp', 'loss');

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const file = path.join(dir, entry.name);
    if (entry.isDirectory()) return sources(file);
    return /\.(cc|h|hpp|cpp)$/.test(entry.name) ? [file] : [];
  });
}

test('cpp/loss includes no N-API header', () => {
  const files = sources(core);
  expect(files.length).toBeGreaterThan(5);
  const offenders = files.filter((file) => /#\s*include\s*[<"](napi|node_api)\.h[>"]/.test(fs.readFileSync(file, 'utf8')));
  expect(offenders.map((file) => path.relative(core, file))).toEqual([]);
});
