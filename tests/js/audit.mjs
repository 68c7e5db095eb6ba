// The GraphQL-over-HTTP specification's own audit (`serverAudits` from the npm package
// `graphql-http`) against a running Parley server. Every MUST must pass; SHOULD and
// MAY findings are printed as warnings.
//
// Usage: node tests/js/audit.mjs http://127.0.0.1:PORT
// Normally run by scripts/js-interop.sh, which starts the server.

import { serverAudits } from 'graphql-http';

const base = (process.argv[2] ?? '').replace(/\/+$/, '');
if (!/^https?:\/\//.test(base)) {
  console.error('usage: node audit.mjs http://HOST:PORT');
  process.exit(2);
}

let errors = 0;
let warnings = 0;
let passed = 0;
for (const audit of serverAudits({ url: `${base}/graphql` })) {
  const result = await audit.fn();
  if (result.status === 'ok') {
    passed += 1;
  } else if (result.status === 'warn') {
    warnings += 1;
    console.log(`  warn  ${audit.name}: ${result.reason}`);
  } else {
    errors += 1;
    console.log(`  ERROR ${audit.name}: ${result.reason}`);
  }
}
console.log(`graphql-http audit: ${passed} passed, ${warnings} warnings, ${errors} errors`);
process.exit(errors === 0 ? 0 : 1);
