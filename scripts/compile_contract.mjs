#!/usr/bin/env node
// Reproducible compile of storage/ledger/contracts/StreamNotaryAnchor.sol with the npm
// `solc` package pinned in package.json (run `npm ci` first).
//
//   node scripts/compile_contract.mjs          # (re)write StreamNotaryAnchor.json
//   node scripts/compile_contract.mjs --check  # exit 1 if the committed JSON differs
//   node scripts/compile_contract.mjs --stdout # print the JSON, write nothing
//
// Settings are fixed (optimizer on, 200 runs, EVM version "paris", no metadata hash) so
// the same source always gives the same bytecode; the committed JSON is what the Python
// ledger deploys, and tests/test_ledger_evm.py re-runs this script and compares.
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const solc = require("solc");

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const dir = join(root, "storage", "ledger", "contracts");
const sourceName = "StreamNotaryAnchor.sol";
const contractName = "StreamNotaryAnchor";

const input = {
  language: "Solidity",
  sources: { [sourceName]: { content: readFileSync(join(dir, sourceName), "utf8") } },
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "paris",
    metadata: { bytecodeHash: "none", appendCBOR: false },
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
  },
};

const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors || []).filter((e) => e.severity === "error");
if (errors.length) {
  for (const e of errors) console.error(e.formattedMessage);
  process.exit(2);
}
const c = output.contracts[sourceName][contractName];
const artifact = {
  contractName,
  sourceName,
  compiler: { name: "solc-js", version: solc.version() },
  settings: input.settings,
  abi: c.abi,
  bytecode: "0x" + c.evm.bytecode.object,
  deployedBytecode: "0x" + c.evm.deployedBytecode.object,
};
const text = JSON.stringify(artifact, null, 2) + "\n";
const target = join(dir, `${contractName}.json`);

if (process.argv.includes("--stdout")) {
  process.stdout.write(text);
} else if (process.argv.includes("--check")) {
  let committed = "";
  try {
    committed = readFileSync(target, "utf8");
  } catch {
    committed = "";
  }
  if (committed !== text) {
    console.error(`${target} differs from the compiler output; run: node scripts/compile_contract.mjs`);
    process.exit(1);
  }
  console.log(`${target} matches solc ${solc.version()}`);
} else {
  writeFileSync(target, text);
  console.log(`wrote ${target} (solc ${solc.version()})`);
}
