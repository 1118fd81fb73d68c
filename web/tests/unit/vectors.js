// Loads the shared protocol test vectors (peer-assist/tests/vectors/), the contract between the Rust
// and the JavaScript implementations.

import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const dir = new URL('../../../peer-assist/tests/vectors/', import.meta.url);

export function loadVectors(name) {
  return JSON.parse(readFileSync(fileURLToPath(new URL(name, dir)), 'utf8'));
}

/** A vector's message text, with its `repeat` expansion applied. */
export function vectorText(v) {
  if (!v.repeat) return v.json;
  const { placeholder, with: piece, times } = v.repeat;
  const at = v.json.indexOf(placeholder);
  if (at < 0 || v.json.indexOf(placeholder, at + 1) >= 0) throw new Error(`${v.name}: placeholder must occur once`);
  return v.json.slice(0, at) + piece.repeat(times) + v.json.slice(at + placeholder.length);
}

export const hex = (bytes) => Buffer.from(bytes).toString('hex');
export const unhex = (s) => new Uint8Array(Buffer.from(s, 'hex'));
