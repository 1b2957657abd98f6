/**
 * The tensor operators against PyTorch (the cases and the comparison: test/parity/operators.ts; `npm run parity`
 * runs the same), with the Python whose torch is the version of the addon's LibTorch
 * (test/helpers/torch-python.ts). Where no such Python exists the suite is skipped with the reason printed.
 */
import { findTorchPython } from './helpers/torch-python';
import { OPERATOR_CASES, Reference, checkOperatorCase, runOperatorReference } from './parity/operators';

const found = findTorchPython();
const python = found.path ?? undefined;
if (!python) console.warn(`operator parity tests skipped: ${found.reason}`);
const describePy = python ? describe : describe.skip;

describePy(`tensor operators match PyTorch ${found.torchVersion} (${python})`, () => {
  let reference: Record<string, Reference> = {};

  beforeAll(() => {
    reference = runOperatorReference(python!);
  });

  test.each(Object.keys(OPERATOR_CASES))('%s', (name) => {
    expect(checkOperatorCase(name, reference[name]).failures).toEqual([]);
  });

  it('covers gradients (the comparison is not vacuous)', () => {
    const withGrads = Object.values(reference).filter((r) => Object.keys(r.grads).length > 0).length;
    expect(withGrads).toBeGreaterThanOrEqual(25);
  });
});
