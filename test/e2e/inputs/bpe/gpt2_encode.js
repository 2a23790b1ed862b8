// The reference for test/e2e/bpe.test: gpt-3-encoder's own JavaScript encoder.
//   node gpt2_encode.js PACKAGE_DIR files FILE...   "== FILE", then its ids, one per line
//   node gpt2_encode.js PACKAGE_DIR stream FILE...  each file as a document: 50256, its ids
// Files are read as Node reads UTF-8 ('utf8': ill-formed sequences become U+FFFD).
const fs = require('fs');
const path = require('path');
const [pkg, mode, ...files] = process.argv.slice(2);
const { encode } = require(path.resolve(pkg, 'Encoder.js'));
const out = [];
for (const file of files) {
  const ids = encode(fs.readFileSync(file, 'utf8'));
  if (mode === 'files') out.push('== ' + file);
  else if (mode === 'stream') out.push('50256');
  else throw new Error('mode: expected files or stream, got ' + mode);
  for (const id of ids) {
    if (typeof id !== 'number') throw new Error(file + ': the encoder gave ' + id);
    out.push(String(id));
  }
}
process.stdout.write(out.length ? out.join('\n') + '\n' : '');
