// The TypeScript side of the JSON contract: src/model.ts must declare exactly the shapes of
// roar_nb/shapes.schema.json (which pytest validates the server's real documents against,
// tests/integration/test_json_contract.py and tests/resilience/test_server_api.py). For each
// interface: the same property names, optional exactly where the schema does not require the
// key, and the same JSON types (string / number / boolean / null / array / object).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const schema = JSON.parse(fs.readFileSync(path.join(root, '..', 'roar_nb', 'shapes.schema.json'), 'utf8'));
const source = ts.createSourceFile('model.ts', fs.readFileSync(path.join(root, 'src', 'model.ts'), 'utf8'),
  ts.ScriptTarget.Latest, true);

// interface in model.ts -> definition in the schema
const PAIRS = {
  IEdgeJson: 'edge', IGitJson: 'git', IJobJson: 'job', IDagDoc: 'dagView', ISessionInfo: 'sessionInfo',
  ISessionItem: 'sessionItem', ISessionsDoc: 'sessionsView', IChangesDoc: 'changesView',
  IArtifactRef: 'artifactRef', IArtifactDoc: 'artifact', IReproductionJson: 'reproduction',
  IVerdictJson: 'verdict', IErrorJson: 'error'
};

/** name -> {members: Map(prop -> {optional, types}), heritage: [names]} for every interface. */
function interfaces() {
  const out = new Map();
  for (const st of source.statements) {
    if (!ts.isInterfaceDeclaration(st)) continue;
    const members = new Map();
    for (const m of st.members) {
      if (!ts.isPropertySignature(m)) continue;
      members.set(m.name.getText(source), { optional: !!m.questionToken, types: tsTypes(m.type) });
    }
    const heritage = (st.heritageClauses ?? []).flatMap(h => h.types.map(t => t.expression.getText(source)));
    out.set(st.name.text, { members, heritage });
  }
  return out;
}

/** The JSON types a TypeScript property type allows. */
function tsTypes(node) {
  if (ts.isUnionTypeNode(node)) return new Set(node.types.flatMap(t => [...tsTypes(t)]));
  if (ts.isArrayTypeNode(node)) return new Set(['array']);
  if (ts.isLiteralTypeNode(node)) {
    if (node.literal.kind === ts.SyntaxKind.NullKeyword) return new Set(['null']);
    if (ts.isStringLiteral(node.literal)) return new Set(['string']);
  }
  switch (node.kind) {
    case ts.SyntaxKind.StringKeyword: return new Set(['string']);
    case ts.SyntaxKind.NumberKeyword: return new Set(['number']);
    case ts.SyntaxKind.BooleanKeyword: return new Set(['boolean']);
    case ts.SyntaxKind.NullKeyword: return new Set(['null']);
    case ts.SyntaxKind.TypeLiteral: return new Set(['object']);
  }
  if (ts.isTypeReferenceNode(node)) return new Set(['object']); // IFoo, Record<string, string>
  throw new Error(`model.ts: unsupported type ${node.getText(source)}`);
}

/** The JSON types a schema property allows. */
function schemaTypes(prop) {
  if (prop.$ref) return new Set(['object']);
  if (prop.anyOf) return new Set(prop.anyOf.flatMap(p => [...schemaTypes(p)]));
  if (prop.enum) return new Set(prop.enum.map(v => (v === null ? 'null' : typeof v)));
  const types = Array.isArray(prop.type) ? prop.type : [prop.type];
  return new Set(types.map(t => (t === 'integer' ? 'number' : t)));
}

function flatten(all, name) {
  const it = all.get(name);
  assert.ok(it, `model.ts has no interface ${name}`);
  const members = new Map();
  for (const base of it.heritage) for (const [k, v] of flatten(all, base)) members.set(k, v);
  for (const [k, v] of it.members) members.set(k, v);
  return members;
}

test('every schema definition the panel reads has its interface', () => {
  const all = interfaces();
  for (const [iface, def] of Object.entries(PAIRS)) {
    assert.ok(schema.$defs[def], `schema has no $defs/${def}`);
    assert.ok(all.has(iface), `model.ts has no interface ${iface}`);
  }
  // every exported interface is paired, so a new shape cannot skip the contract
  assert.deepEqual([...all.keys()].filter(n => !(n in PAIRS)), []);
});

for (const [iface, def] of Object.entries(PAIRS)) {
  test(`${iface} declares exactly $defs/${def}`, () => {
    const members = flatten(interfaces(), iface);
    const d = schema.$defs[def];
    const required = new Set(d.required ?? []);
    assert.deepEqual([...members.keys()].sort(), Object.keys(d.properties).sort(), 'property names');
    for (const [k, m] of members) {
      assert.equal(m.optional, !required.has(k), `${iface}.${k}: optional in TypeScript iff not required`);
      assert.deepEqual([...m.types].sort(), [...schemaTypes(d.properties[k])].sort(), `${iface}.${k}: JSON types`);
    }
  });
}
