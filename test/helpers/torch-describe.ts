/**
 * One canonical description of a saved object, made on both sides of the format tests: by Python (of what
 * torch.load returns, or of what it saved) and by Node (of what `load` returns, or of what it saves). Tensor
 * values are compared exactly: floats as numbers parsed from Python's repr (NaN, -0 and infinities included),
 * integers as decimal strings (int64 stays exact).
 */
import * as bce from '../../lib';

export type Desc =
  | null
  | { bool: boolean }
  | { int: string }
  | { float: number }
  | { num: number }
  | { str: string }
  | { list: Desc[] }
  | { tuple: Desc[] }
  | { dict: [Desc, Desc][] }
  | { tensor: string; shape: number[]; values: (number | string)[]; requiresGrad: boolean; device: string };

/** Python: prints the description of torch.load(argv[1], weights_only=argv[2] == '1') as JSON. */
export const PY_DESCRIBE = `
import json, sys, torch
FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
def desc(v):
    if isinstance(v, torch.Tensor):
        t = v.detach()
        if t.dtype in FLOATS:
            vals = [repr(x) for x in t.double().flatten().tolist()]
        else:
            vals = [str(x) for x in t.to(torch.int64).flatten().tolist()]
        return {'tensor': str(t.dtype).replace('torch.', ''), 'shape': list(t.shape), 'values': vals,
                'requiresGrad': v.requires_grad, 'device': str(t.device)}
    if isinstance(v, bool): return {'bool': v}
    if isinstance(v, int): return {'int': str(v)}
    if isinstance(v, float): return {'float': repr(v)}
    if isinstance(v, str): return {'str': v}
    if v is None: return None
    if isinstance(v, tuple): return {'tuple': [desc(x) for x in v]}
    if isinstance(v, list): return {'list': [desc(x) for x in v]}
    if isinstance(v, dict): return {'dict': [[desc(k), desc(x)] for k, x in v.items()]}
    raise TypeError('unexpected %r' % type(v))
def load(path, weights_only):
    return torch.load(path, weights_only=True) if weights_only else torch.load(path)
`;

/** Python's repr of a float as a number. */
function pyFloat(text: string): number {
  if (text === 'nan') return NaN;
  if (text === 'inf') return Infinity;
  if (text === '-inf') return -Infinity;
  return Number(text);
}

/** Parses Python's JSON: float reprs become numbers, as Node's own descriptions hold them. */
export function fromPython(d: unknown): Desc {
  if (d === null) return null;
  const o = d as Record<string, unknown>;
  if ('float' in o) return { float: pyFloat(o.float as string) };
  if ('tensor' in o) {
    const floating = ['float16', 'bfloat16', 'float32', 'float64'].includes(o.tensor as string);
    return {
      ...(o as { tensor: string; shape: number[]; requiresGrad: boolean; device: string }),
      values: (o.values as string[]).map((v) => (floating ? pyFloat(v) : v)),
    };
  }
  if ('list' in o) return { list: (o.list as unknown[]).map(fromPython) };
  if ('tuple' in o) return { tuple: (o.tuple as unknown[]).map(fromPython) };
  if ('dict' in o) return { dict: (o.dict as [unknown, unknown][]).map(([k, v]) => [fromPython(k), fromPython(v)]) };
  return o as Desc;
}

function tensorDesc(t: bce.Tensor): Desc {
  const floating = ['float16', 'bfloat16', 'float32', 'float64'].includes(t.dtype);
  const values = Array.from(t.toArray() as ArrayLike<number | bigint>, (v) => (floating ? Number(v) : String(v)));
  return { tensor: t.dtype, shape: t.shape, values, requiresGrad: t.requiresGrad, device: t.device };
}

/** What Python will see of a value Node saves (whole numbers are ints). */
export function describeSaved(v: bce.Saveable): Desc {
  if (v === null) return null;
  if (bce.isTensor(v)) return tensorDesc(v);
  if (typeof v === 'boolean') return { bool: v };
  if (typeof v === 'bigint') return { int: String(v) };
  if (typeof v === 'number') return Number.isSafeInteger(v) && !Object.is(v, -0) ? { int: String(v) } : { float: v };
  if (typeof v === 'string') return { str: v };
  if (Array.isArray(v)) return { list: v.map(describeSaved) };
  if (v instanceof Map) return { dict: [...v].map(([k, x]) => [describeSaved(k), describeSaved(x)]) };
  return { dict: Object.entries(v).map(([k, x]) => [{ str: k }, describeSaved(x)]) };
}

/** What Node's `load` returns, described; Python's description is brought to the same terms by `asNodeSees`. */
export function describeLoaded(v: bce.Loaded): Desc {
  if (v === null) return null;
  if (bce.isTensor(v)) return tensorDesc(v);
  if (typeof v === 'boolean') return { bool: v };
  if (typeof v === 'bigint') return { int: String(v) };
  if (typeof v === 'number') return { num: v };
  if (typeof v === 'string') return { str: v };
  if (Array.isArray(v)) return { list: v.map(describeLoaded) };
  return { dict: Object.entries(v).map(([k, x]) => [{ str: k }, describeLoaded(x)]) };
}

/** Python's description as Node sees it: tuples are arrays, dict keys strings, safe ints and floats numbers. */
export function asNodeSees(d: Desc): Desc {
  if (d === null) return null;
  if ('int' in d) {
    const n = Number(d.int);
    return Number.isSafeInteger(n) ? { num: n } : d;
  }
  if ('float' in d) return { num: d.float };
  if ('list' in d) return { list: d.list.map(asNodeSees) };
  if ('tuple' in d) return { list: d.tuple.map(asNodeSees) };
  if ('dict' in d) {
    return {
      dict: d.dict.map(([k, v]) => [k !== null && 'int' in k ? { str: k.int } : k, asNodeSees(v)] as [Desc, Desc]),
    };
  }
  return d;
}
