// The page's key (keys.js): Ed25519 where WebCrypto has it, else P-256; kept in IndexedDB (a fake
// here), a session key without it; receipts signed over the text of
// peer-assist/src/accounting/receipt.rs, verifiable by anyone with WebCrypto.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { KEY_DB, KEY_STORE, generateKeyPair, loadOrCreateKey, nodeKeyOf, randomHex, receiptText, sessionKey } from '../../src/keys.js';
import { unhex } from './vectors.js';

const subtle = globalThis.crypto.subtle;

const RECEIPT = {
  alg: 'ed25519',
  uploader: 'ab'.repeat(32),
  receiver: 'cd'.repeat(32),
  swarm: '/demo/live/v0.m3u8',
  segment: '/demo/live/v0/seg7.ts',
  sha256: '07'.repeat(32),
  bytes: 1234,
  time: 1_700_000_000_000,
  nonce: '09'.repeat(16),
};

/** Verifies `sigHex` over `text` with the raw public key `publicHex`, as the gateway does. */
async function verifies(alg, publicHex, sigHex, text) {
  const [importParams, verifyParams] =
    alg === 'ed25519'
      ? [{ name: 'Ed25519' }, { name: 'Ed25519' }]
      : [{ name: 'ECDSA', namedCurve: 'P-256' }, { name: 'ECDSA', hash: 'SHA-256' }];
  const key = await subtle.importKey('raw', unhex(publicHex), importParams, false, ['verify']);
  return subtle.verify(verifyParams, key, unhex(sigHex), new TextEncoder().encode(text));
}

/** WebCrypto without Ed25519 (as in browsers that lack it). */
const noEd25519 = new Proxy(subtle, {
  get(target, name) {
    if (name === 'generateKey') {
      return (alg, ...rest) => (alg.name === 'Ed25519' ? Promise.reject(new DOMException('not supported', 'NotSupportedError')) : target.generateKey(alg, ...rest));
    }
    const v = target[name];
    return typeof v === 'function' ? v.bind(target) : v;
  },
});

test('the signed text of a receipt is the Rust one, byte for byte', () => {
  assert.equal(
    receiptText(RECEIPT),
    `hls-p2p-receipt/1\ned25519\n${'ab'.repeat(32)}\n${'cd'.repeat(32)}\n/demo/live/v0.m3u8\n/demo/live/v0/seg7.ts\n${'07'.repeat(32)}\n1234\n1700000000000\n${'09'.repeat(16)}`,
  );
});

test('nonces are 16 random bytes in hex, not repeated', () => {
  const seen = new Set(Array.from({ length: 1000 }, () => randomHex(16)));
  assert.equal(seen.size, 1000);
  for (const n of seen) assert.match(n, /^[0-9a-f]{32}$/);
});

test('an Ed25519 session key: 32-byte public key, 64-byte signatures that verify', async () => {
  const key = await sessionKey();
  assert.equal(key.alg, 'ed25519');
  assert.equal(key.persistent, false);
  assert.match(key.publicHex, /^[0-9a-f]{64}$/);
  const text = receiptText({ ...RECEIPT, receiver: key.publicHex });
  const sig = await key.sign(text);
  assert.match(sig, /^[0-9a-f]{128}$/);
  assert.equal(await verifies('ed25519', key.publicHex, sig, text), true);
  assert.equal(await verifies('ed25519', key.publicHex, sig, `${text}0`), false);
});

test('without Ed25519: P-256, the uncompressed point, r||s signatures that verify', async () => {
  const pair = await generateKeyPair(noEd25519);
  assert.equal(pair.alg, 'p256');
  assert.equal(pair.privateKey.extractable, false);
  const key = await nodeKeyOf(pair, { subtle: noEd25519 });
  assert.match(key.publicHex, /^04[0-9a-f]{128}$/);
  const text = receiptText({ ...RECEIPT, alg: 'p256', receiver: key.publicHex });
  const sig = await key.sign(text);
  assert.match(sig, /^[0-9a-f]{128}$/, 'IEEE P1363: 64 bytes');
  assert.equal(await verifies('p256', key.publicHex, sig, text), true);
});

test('no IndexedDB: a session key, different each time', async () => {
  const a = await loadOrCreateKey({ indexedDB: null });
  const b = await loadOrCreateKey({ indexedDB: null });
  assert.equal(a.persistent, false);
  assert.notEqual(a.publicHex, b.publicHex);
});

test('IndexedDB: made once and stored, the same key on the next load; a broken store gives a session key', async () => {
  const idb = fakeIndexedDB();
  const first = await loadOrCreateKey({ indexedDB: idb });
  assert.equal(first.persistent, true);
  assert.equal(first.alg, 'ed25519');
  const record = idb.data.get(KEY_DB).get(KEY_STORE).get('node');
  assert.equal(record.privateKey.extractable, false, 'the private key is not extractable');
  const again = await loadOrCreateKey({ indexedDB: idb });
  assert.equal(again.publicHex, first.publicHex, 'the stored key');
  const text = receiptText({ ...RECEIPT, receiver: again.publicHex });
  assert.equal(await verifies('ed25519', first.publicHex, await again.sign(text), text), true);

  // Two pages making a key at once: both end up with the first stored.
  const race = fakeIndexedDB();
  const [x, y] = await Promise.all([loadOrCreateKey({ indexedDB: race }), loadOrCreateKey({ indexedDB: race })]);
  assert.equal(x.publicHex, y.publicHex);

  const warnings = [];
  const broken = await loadOrCreateKey({ indexedDB: fakeIndexedDB({ failOpen: true }), warn: (...a) => warnings.push(a) });
  assert.equal(broken.persistent, false);
  assert.equal(warnings[0][0], 'key-store');
});

/**
 * Just enough IndexedDB for keys.js: open (with upgradeneeded), one object store with
 * out-of-line keys, get/add/put in transactions that complete asynchronously; `add` of an existing
 * key fails the transaction with ConstraintError. Values are kept as given (CryptoKeys are
 * structured-cloneable in browsers).
 */
function fakeIndexedDB({ failOpen = false } = {}) {
  const data = new Map();
  const later = (fn) => setTimeout(fn, 0);
  const factory = {
    data,
    open(name) {
      const req = { result: null, error: null };
      later(() => {
        if (failOpen) {
          req.error = new DOMException('no storage', 'UnknownError');
          req.onerror?.();
          return;
        }
        const fresh = !data.has(name);
        if (fresh) data.set(name, new Map());
        const stores = data.get(name);
        req.result = {
          objectStoreNames: { contains: (s) => stores.has(s) },
          createObjectStore: (s) => stores.set(s, new Map()),
          close() {},
          transaction(storeName) {
            const store = stores.get(storeName);
            const tx = { error: null };
            const pending = [];
            const request = (op) => {
              const r = { result: undefined, error: null };
              pending.push(() => {
                try {
                  op(r);
                } catch (e) {
                  r.onerror?.();
                  throw e;
                }
                r.onsuccess?.();
              });
              return r;
            };
            tx.objectStore = () => ({
              get: (key) => request((r) => (r.result = store.get(key))),
              put: (value, key) => request((r) => store.set(key, value)),
              add: (value, key) =>
                request((r) => {
                  if (store.has(key)) throw (r.error = new DOMException('exists', 'ConstraintError'));
                  store.set(key, value);
                }),
            });
            later(() => {
              for (const run of pending) {
                try {
                  run();
                } catch (e) {
                  tx.error = e;
                  tx.onerror?.({ target: { error: e } });
                  tx.onabort?.();
                  return;
                }
              }
              tx.oncomplete?.();
            });
            return tx;
          },
        };
        if (fresh) req.onupgradeneeded?.();
        req.onsuccess?.();
      });
      return req;
    },
  };
  return factory;
}
