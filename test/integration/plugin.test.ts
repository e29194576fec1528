/**
 * Integration test for the `mmlite` logical decoding output plugin (extension/mmlite.c).
 *
 * mmlite = pgoutput + a filter_by_origin callback that drops every change carrying a
 * replication origin, i.e. `origin = none` for PostgreSQL < 16 publishers. This test runs
 * real PostgreSQL 15 servers and checks, against a plain pgoutput control (so the test
 * can actually fail), that:
 *   - the plugin is installed and loadable by PG 15,
 *   - an mmlite slot keeps local changes and drops origin-tagged ones,
 *   - a pgoutput slot keeps both,
 *   - a real subscription on a second PG 15 server, attached to an mmlite slot, receives
 *     the local rows but not the origin-tagged one.
 *
 * Servers come from the shared LocalServer harness (src/local/server.ts).
 */
import { strict as assert } from 'node:assert';
import { existsSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';

import { LocalServer, binDir, installDirs } from '../../src/local/server.js';

const PG15_CONFIG = '/usr/lib/postgresql/15/bin/pg_config';
const INSTALL_FIX = `make -C extension install PG_CONFIG=${PG15_CONFIG}`;

async function connect(server: LocalServer, database = 'postgres'): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: server.dsn(database) });
  await c.connect();
  return c;
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Some PostgreSQL builds (Debian 15.19+, CVE-2026-6471 fix) only allow output plugins listed
 * in `output_plugin_libraries`, checked when a slot is created AND whenever it is decoded
 * (walsender included), so a session-level SET is not enough: it must be set server-wide.
 * Builds without that setting need nothing. Returns whether the setting had to be changed.
 */
async function allowMmlitePlugin(c: pg.Client): Promise<boolean> {
  const res = await c.query<{ setting: string }>(`SELECT setting FROM pg_settings WHERE name = 'output_plugin_libraries'`);
  if (res.rows.length === 0) return false;
  const libs = res.rows[0]!.setting.split(',').map((s) => s.trim().replace(/^"(.*)"$/, '$1')).filter((s) => s !== '');
  if (libs.includes('mmlite')) return false;
  const list = [...libs, 'mmlite'].map((l) => `'${l.replace(/'/g, "''")}'`).join(', ');
  // List syntax ('a', 'b'), not one string 'a, b' (that would be a single quoted element).
  await c.query(`ALTER SYSTEM SET output_plugin_libraries = ${list}`);
  await c.query(`SELECT pg_reload_conf()`);
  await waitFor('output_plugin_libraries to include mmlite after reload', async () => {
    const r = await c.query<{ output_plugin_libraries: string }>(`SHOW output_plugin_libraries`);
    return /(^|[\s,"])mmlite($|[\s,"])/.test(r.rows[0]!.output_plugin_libraries) ? true : undefined;
  });
  return true;
}

// ---------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------

/** Row markers; distinct byte strings so they can be searched for in pgoutput's binary messages. */
const LOCAL_1 = 'L1-local-row';
const REMOTE_2 = 'X2-origin-tagged-row';
const LOCAL_3 = 'L3-local-row';

interface DecodedMessage {
  type: string;
  data: Buffer;
}

async function peek(c: pg.Client, slot: string, publication: string): Promise<DecodedMessage[]> {
  const res = await c.query<{ data: Buffer }>(
    `SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL,
       'proto_version', '1', 'publication_names', $2) ORDER BY lsn`,
    [slot, publication],
  );
  return res.rows.map((r) => ({ type: String.fromCharCode(r.data[0]), data: r.data }));
}

function carries(messages: DecodedMessage[], marker: string): boolean {
  return messages.some((m) => m.type === 'I' && m.data.includes(Buffer.from(marker)));
}

describe('mmlite output plugin (PostgreSQL 15)', function () {
  this.timeout(180_000);

  let publisher: LocalServer | undefined;
  let subscriber: LocalServer | undefined;
  let pub: pg.Client | undefined;
  let sub: pg.Client | undefined;
  let subControl: pg.Client | undefined;

  before(async function () {
    binDir(15); // throws with the install hint if the PG 15 binaries are missing
    const so = path.join(installDirs(15).pkglibdir, 'mmlite.so');
    if (!existsSync(so)) {
      throw new Error(`the mmlite output plugin is not installed for PostgreSQL 15 (${so} is missing). Fix: ${INSTALL_FIX}`);
    }

    [publisher, subscriber] = await Promise.all([
      LocalServer.start({ major: 15, name: 'plugin-pub' }),
      // The launcher starts at most one apply worker per wal_retrieve_retry_interval (5s).
      LocalServer.start({ major: 15, name: 'plugin-sub', settings: { wal_retrieve_retry_interval: '200ms' } }),
    ]);
    pub = await connect(publisher);
    await allowMmlitePlugin(pub);

    // Slots first, so that every change below is in their stream.
    await pub.query(`SELECT pg_create_logical_replication_slot('mm_peek', 'mmlite')`);
    await pub.query(`SELECT pg_create_logical_replication_slot('po_peek', 'pgoutput')`);
    await pub.query(`SELECT pg_create_logical_replication_slot('mm_sub', 'mmlite')`);
    await pub.query(`SELECT pg_create_logical_replication_slot('po_sub', 'pgoutput')`);
    await pub.query(`CREATE TABLE items (id int PRIMARY KEY, note text NOT NULL)`);
    await pub.query(`CREATE PUBLICATION pub FOR TABLE items`);

    // 1: an ordinary local write.
    await pub.query(`INSERT INTO items VALUES (1, $1)`, [LOCAL_1]);

    // 2: a write tagged with a replication origin, exactly as a subscription's apply worker
    //    would tag a row it received from another node.
    const tagged = await connect(publisher);
    try {
      await tagged.query(`SELECT pg_replication_origin_create('node_x')`);
      await tagged.query(`SELECT pg_replication_origin_session_setup('node_x')`);
      await tagged.query(`INSERT INTO items VALUES (2, $1)`, [REMOTE_2]);
      await tagged.query(`SELECT pg_replication_origin_session_reset()`);
    } finally {
      await tagged.end();
    }

    // 3: another local write, committed after the tagged one.
    await pub.query(`INSERT INTO items VALUES (3, $1)`, [LOCAL_3]);
  });

  after(async function () {
    // Subscriber first, so the publisher's walsenders go away before it shuts down.
    for (const c of [sub, subControl, pub]) await c?.end().catch(() => undefined);
    // Only our own servers: other suites in this mocha process have theirs.
    for (const s of [subscriber, publisher]) {
      await s?.destroy().catch((err: unknown) => console.error(`warning: could not remove ${s.name}: ${(err as Error).message}`));
    }
  });

  it('is installed and loadable by PostgreSQL 15', async function () {
    const res = await pub!.query<{ slot_name: string; plugin: string }>(
      `SELECT slot_name, plugin FROM pg_replication_slots WHERE slot_type = 'logical' ORDER BY slot_name`,
    );
    assert.deepEqual(
      res.rows.map((r) => `${r.slot_name}:${r.plugin}`),
      ['mm_peek:mmlite', 'mm_sub:mmlite', 'po_peek:pgoutput', 'po_sub:pgoutput'],
    );
  });

  it('mmlite slot keeps local changes and drops origin-tagged ones', async function () {
    const msgs = await peek(pub!, 'mm_peek', 'pub');
    assert.ok(carries(msgs, LOCAL_1), `mmlite slot lost local row 1 (messages: ${msgs.map((m) => m.type).join('')})`);
    assert.ok(carries(msgs, LOCAL_3), `mmlite slot lost local row 3 (messages: ${msgs.map((m) => m.type).join('')})`);
    assert.ok(!carries(msgs, REMOTE_2), 'mmlite slot emitted the origin-tagged row: origin filtering is not in effect');
    assert.ok(!msgs.some((m) => m.type === 'O'), 'mmlite slot emitted an Origin message');
    // Two local transactions, each BEGIN .. INSERT .. COMMIT (+ one RELATION message).
    assert.equal(msgs.filter((m) => m.type === 'I').length, 2);
    assert.equal(msgs.filter((m) => m.type === 'C').length, 2);
  });

  it('pgoutput slot (control) keeps both local and origin-tagged changes', async function () {
    const msgs = await peek(pub!, 'po_peek', 'pub');
    assert.ok(carries(msgs, LOCAL_1), 'pgoutput slot lost local row 1');
    assert.ok(carries(msgs, REMOTE_2), 'pgoutput slot did not emit the origin-tagged row: the test setup is broken');
    assert.ok(carries(msgs, LOCAL_3), 'pgoutput slot lost local row 3');
    assert.ok(msgs.some((m) => m.type === 'O'), 'pgoutput slot did not emit an Origin message for the tagged transaction');
    assert.equal(msgs.filter((m) => m.type === 'I').length, 3);
  });

  it('a subscription on an mmlite slot receives local rows but not origin-tagged rows', async function () {
    const admin = await connect(subscriber!);
    try {
      await admin.query(`CREATE DATABASE control`);
    } finally {
      await admin.end();
    }
    sub = await connect(subscriber!);
    subControl = await connect(subscriber!, 'control');
    for (const c of [sub, subControl]) await c.query(`CREATE TABLE items (id int PRIMARY KEY, note text NOT NULL)`);

    // copy_data = false: only the slot's change stream is applied (an initial table copy
    // would bring every row, origin-tagged or not).
    await sub.query(
      `CREATE SUBSCRIPTION mm CONNECTION '${publisher!.dsn()}' PUBLICATION pub
         WITH (create_slot = false, slot_name = 'mm_sub', copy_data = false)`,
    );
    // Control: the same on a plain pgoutput slot, which must deliver the tagged row too.
    await subControl.query(
      `CREATE SUBSCRIPTION po CONNECTION '${publisher!.dsn()}' PUBLICATION pub
         WITH (create_slot = false, slot_name = 'po_sub', copy_data = false)`,
    );

    const ids = async (c: pg.Client): Promise<number[]> =>
      (await c.query<{ id: number }>(`SELECT id FROM items ORDER BY id`)).rows.map((r) => r.id);

    // Row 3 was committed after the tagged row 2, and changes are applied in commit order,
    // so once row 3 has arrived, row 2 would already be there had it been sent.
    const controlIds = await waitFor('the pgoutput control subscription to apply all 3 rows', async () => {
      const got = await ids(subControl!);
      return got.length >= 3 ? got : undefined;
    });
    assert.deepEqual(controlIds, [1, 2, 3]);

    const got = await waitFor('the mmlite subscription to apply row 3', async () => {
      const rows = await ids(sub!);
      return rows.includes(3) ? rows : undefined;
    });
    assert.deepEqual(got, [1, 3], 'the mmlite subscription must receive local rows 1 and 3 but not origin-tagged row 2');

    // And the subscription really consumed the mmlite slot (not some other path).
    const slot = await pub!.query<{ active: boolean }>(`SELECT active FROM pg_replication_slots WHERE slot_name = 'mm_sub'`);
    assert.equal(slot.rows[0]?.active, true, 'slot mm_sub is not in use by the subscription');
  });
});
