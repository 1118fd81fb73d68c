// The page's long-lived key pair (docs/LEDGER.md): its stable identity towards the gateway's
// ledger, announced as `key` in `join`, the key its delivery receipts are signed with and that
// other viewers' receipts credit.
//
// Kept in IndexedDB (database `p2pa`, store `keys`) as non-extractable CryptoKey objects, made on
// first use: WebCrypto Ed25519 where the browser has it, else ECDSA P-256. Without IndexedDB
// (private browsing, node), a key for this page's session only.
//
// A receipt's signed text is fixed (peer-assist/src/accounting/receipt.rs `signed_text`):
//
//   hls-p2p-receipt/1\n{alg}\n{uploader}\n{receiver}\n{swarm}\n{segment}\n{sha256}\n{bytes}\n{time}\n{nonce}
//
// (no trailing newline), signed as its UTF-8 bytes: Ed25519 (64 bytes), or ECDSA P-256 with
// SHA-256, whose WebCrypto signature is already r‖s (64 bytes, IEEE P1363).

import { toHex } from './util.js';

/** The first line of every receipt's signed text. */
export const RECEIPT_DOMAIN = 'hls-p2p-receipt/1';
export const KEY_DB = 'p2pa';
export const KEY_STORE = 'keys';
/** The record of the page's key in the store. */
const KEY_ID = 'node';
/** IndexedDB that does not answer within this is given up on (a session key instead). */
const IDB_TIMEOUT_MS = 3000;

const ALGORITHMS = {
  ed25519: { generate: { name: 'Ed25519' }, sign: { name: 'Ed25519' } },
  p256: { generate: { name: 'ECDSA', namedCurve: 'P-256' }, sign: { name: 'ECDSA', hash: 'SHA-256' } },
};

/**
 * @typedef {object} NodeKey
 * @property {"ed25519"|"p256"} alg
 * @property {string} publicHex  the public key, lowercase hex (Ed25519: 64 digits; P-256: 130, the
 *   uncompressed point)
 * @property {(text: string) => Promise<string>} sign  the signature over the UTF-8 of `text`, hex
 * @property {boolean} persistent  kept in IndexedDB (false: this session only)
 */

/** The signed text of a receipt (every field but `sig`). */
export function receiptText(r) {
  return [RECEIPT_DOMAIN, r.alg, r.uploader, r.receiver, r.swarm, r.segment, r.sha256, r.bytes, r.time, r.nonce].join('\n');
}

/** `n` random bytes, hex (a receipt's nonce: 16). */
export function randomHex(n = 16, crypto = globalThis.crypto) {
  return toHex(crypto.getRandomValues(new Uint8Array(n)));
}

/**
 * A new key pair (Ed25519, else P-256), private key not extractable.
 * @returns {Promise<{alg: string, privateKey: CryptoKey, publicKey: CryptoKey}>}
 */
export async function generateKeyPair(subtle = globalThis.crypto?.subtle) {
  if (!subtle) throw new Error('no WebCrypto');
  let failure = null;
  for (const alg of ['ed25519', 'p256']) {
    try {
      const pair = await subtle.generateKey(ALGORITHMS[alg].generate, false, ['sign', 'verify']);
      return { alg, privateKey: pair.privateKey, publicKey: pair.publicKey };
    } catch (e) {
      failure = e; // no Ed25519 in this browser: P-256
    }
  }
  throw failure;
}

/** A NodeKey over a stored or new pair. */
export async function nodeKeyOf({ alg, privateKey, publicKey }, { subtle = globalThis.crypto?.subtle, persistent = false } = {}) {
  const params = ALGORITHMS[alg]?.sign;
  if (!params) throw new Error(`unknown key algorithm ${alg}`);
  const publicHex = toHex(new Uint8Array(await subtle.exportKey('raw', publicKey)));
  const encoder = new TextEncoder();
  return Object.freeze({
    alg,
    publicHex,
    persistent,
    async sign(text) {
      return toHex(new Uint8Array(await subtle.sign(params, privateKey, encoder.encode(text))));
    },
  });
}

/** A key for this session only (nothing stored). */
export async function sessionKey(subtle = globalThis.crypto?.subtle) {
  return nodeKeyOf(await generateKeyPair(subtle), { subtle });
}

/**
 * The page's key: the one in IndexedDB, or a new one stored there; a session key when IndexedDB
 * is missing, refuses or does not answer.
 * @param {{indexedDB?: IDBFactory|null, subtle?: SubtleCrypto, warn?: Function}} [o]
 * @returns {Promise<NodeKey>}
 */
export async function loadOrCreateKey({ indexedDB = globalThis.indexedDB, subtle = globalThis.crypto?.subtle, warn = () => {} } = {}) {
  if (!subtle) throw new Error('no WebCrypto');
  if (indexedDB) {
    try {
      const stored = await withTimeout(storedKey(indexedDB, subtle), IDB_TIMEOUT_MS);
      return await nodeKeyOf(stored, { subtle, persistent: true });
    } catch (e) {
      warn('key-store', e?.message ?? String(e), 'using a key for this session only');
    }
  }
  return sessionKey(subtle);
}

let pageKey = null;

/** The page's key, loaded (or made) once per page: every engine of the page shares it. */
export function pageNodeKey(o) {
  pageKey ??= loadOrCreateKey(o).catch((e) => {
    pageKey = null; // another try next time
    throw e;
  });
  return pageKey;
}

/** The stored pair, or a new one stored first (of two pages making one at once, the first stored wins). */
async function storedKey(indexedDB, subtle) {
  const db = await openDb(indexedDB);
  try {
    const found = await request(db.transaction(KEY_STORE, 'readonly').objectStore(KEY_STORE).get(KEY_ID));
    if (isPair(found)) return found;
    // Not inside the transaction: it would end while the key is made.
    const pair = await generateKeyPair(subtle);
    const record = { alg: pair.alg, privateKey: pair.privateKey, publicKey: pair.publicKey };
    try {
      const tx = db.transaction(KEY_STORE, 'readwrite');
      const done = transactionDone(tx);
      if (found === undefined) tx.objectStore(KEY_STORE).add(record, KEY_ID);
      else tx.objectStore(KEY_STORE).put(record, KEY_ID); // a broken record is replaced
      await done;
      return record;
    } catch (e) {
      if (e?.name !== 'ConstraintError') throw e;
      // Another page stored one meanwhile: that one is the page's key.
      const theirs = await request(db.transaction(KEY_STORE, 'readonly').objectStore(KEY_STORE).get(KEY_ID));
      if (isPair(theirs)) return theirs;
      throw e;
    }
  } finally {
    db.close();
  }
}

const isPair = (r) => Boolean(r && ALGORITHMS[r.alg] && r.privateKey && r.publicKey);

function openDb(indexedDB) {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open(KEY_DB, 1);
    open.onupgradeneeded = () => {
      if (!open.result.objectStoreNames.contains(KEY_STORE)) open.result.createObjectStore(KEY_STORE);
    };
    open.onsuccess = () => resolve(open.result);
    open.onerror = () => reject(open.error ?? new Error('IndexedDB open failed'));
    open.onblocked = () => reject(new Error('IndexedDB open blocked'));
  });
}

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function transactionDone(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = (e) => reject(e?.target?.error ?? tx.error ?? new Error('IndexedDB write failed'));
    tx.onabort = () => reject(tx.error ?? new Error('IndexedDB transaction aborted'));
  });
}

function withTimeout(promise, ms) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`IndexedDB did not answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
