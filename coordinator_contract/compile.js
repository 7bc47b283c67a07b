#!/usr/bin/env node
// Compiles Coordinator.sol with the pinned solcjs (npm `solc`) through its standard-JSON interface and prints
// {abi, bytecode, solc_version} as JSON on stdout. build.py runs it and writes the artifact; the artifact test
// runs it to check that the committed artifact still matches the source.
//
// The module is called directly, not the `solcjs` command line, because that one prints a line about SMT
// solvers before its JSON. Settings are fixed here so that every machine produces the same bytecode.
"use strict";

const fs = require("fs");
const path = require("path");
const solc = require("solc");

const PINNED_VERSION = "0.8.28";
const SOURCE_NAME = "Coordinator.sol";
const CONTRACT_NAME = "Coordinator";

function main() {
  const version = solc.version();
  if (!version.startsWith(PINNED_VERSION + "+")) {
    fail(`solc ${version} is installed, but the artifact is built with ${PINNED_VERSION}: run npm ci`);
  }
  const source = fs.readFileSync(path.join(__dirname, SOURCE_NAME), "utf8");
  const input = {
    language: "Solidity",
    sources: { [SOURCE_NAME]: { content: source } },
    settings: {
      optimizer: { enabled: true, runs: 200 },
      evmVersion: "cancun",
      outputSelection: { [SOURCE_NAME]: { [CONTRACT_NAME]: ["abi", "evm.bytecode.object"] } },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  const problems = (output.errors || []).filter((entry) => entry.severity === "error" || entry.type === "Warning");
  if (problems.length > 0) {
    fail(problems.map((entry) => entry.formattedMessage).join("\n"));
  }
  const contract = output.contracts[SOURCE_NAME][CONTRACT_NAME];
  const artifact = { abi: contract.abi, bytecode: "0x" + contract.evm.bytecode.object, solc_version: version };
  process.stdout.write(JSON.stringify(artifact) + "\n");
}

function fail(message) {
  process.stderr.write(message + "\n");
  process.exit(1);
}

main();
