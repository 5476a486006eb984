import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import {
  type MysqlStore,
  type NewMessage,
  openStore,
  splitStatements,
  type StoreOptions,
  StoreUnavailableError,
} from "../src/store.ts";
import { createTestDatabase, type TestDatabase } from "./helpers/database.ts";
import { TcpProxy } from "./helpers/tcp_proxy.ts";
import { captureLog } from "./helpers/log_capture.ts";

const TABLES = [
  "group_members",
  "mail_groups",
  "message_recipients",
  "messages",
  "users",
];

function message(overrides: Partial<NewMessage> = {}): NewMessage {
  return {
    sender: "alice@example.com",
    recipients: ["bob@example.com"],
    raw: new TextEncoder().encode("Subject: test\r\n\r\nHello\r\n"),
    subject: "test",
    date: new Date("2026-08-01T09:30:12.345Z"),
    body: "Hello\n",
    receivedAt: new Date("2026-08-01T09:30:13.678Z"),
    clientAddress: "192.0.2.1",
    helo: "client.example.com",
    ...overrides,
  };
}

async function withDatabase(
  test: (db: TestDatabase) => Promise<void>,
): Promise<void> {
  const db = await createTestDatabase();
  try {
    await test(db);
  } finally {
    await db.close();
  }
}

async function countRows(db: TestDatabase, table: string): Promise<number> {
  const rows = await db.query(`SELECT COUNT(*) AS n FROM ${table}`);
  return Number(rows[0]?.n);
}

async function sha256Hex(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Buffer.from(digest).toString("hex");
}

/** Returns db.url changed to connect through the proxy. */
function proxiedUrl(db: TestDatabase, proxy: TcpProxy): string {
  const url = new URL(db.url);
  url.hostname = "127.0.0.1";
  url.port = String(proxy.port);
  return url.href;
}

function startProxy(db: TestDatabase): TcpProxy {
  const port = new URL(db.url).port;
  return TcpProxy.start(port === "" ? 3306 : Number(port));
}

interface ProxiedStore {
  readonly db: TestDatabase;
  readonly proxy: TcpProxy;
  readonly store: MysqlStore;
}

/**
 * Runs a test against a store that reaches a fresh database through a TCP
 * proxy, closing store, proxy and database after.
 */
async function withProxiedStore(
  options: StoreOptions,
  test: (fixture: ProxiedStore) => Promise<void>,
): Promise<void> {
  await withDatabase(async (db) => {
    const proxy = startProxy(db);
    let store: MysqlStore | undefined;
    try {
      store = await openStore(proxiedUrl(db, proxy), options);
      await test({ db, proxy, store });
    } finally {
      proxy.restore();
      await store?.close();
      await proxy.close();
    }
  });
}

function countEvents(lines: string[], event: string): number {
  return lines.filter((line) => line.includes(` event=${event}`)).length;
}

Deno.test("openStore creates missing database with schema", async () => {
  await withDatabase(async (db) => {
    const rows = await db.query(
      "SELECT table_name AS name, engine FROM information_schema.tables" +
        " WHERE table_schema = ? ORDER BY table_name",
      [db.name],
    );
    assert.deepEqual(rows.map((row) => row.name).sort(), TABLES);
    for (const row of rows) assert.equal(row.engine, "InnoDB");

    const columns = await db.query(
      "SELECT column_name AS name FROM information_schema.columns" +
        " WHERE table_schema = ? AND table_name = 'messages'",
      [db.name],
    );
    const names = columns.map((row) => row.name);
    for (
      const column of [
        "id",
        "sender",
        "subject",
        "date",
        "body",
        "raw",
        "size",
        "received_at",
        "client_address",
        "helo",
      ]
    ) {
      assert.ok(names.includes(column), `messages.${column} is missing`);
    }
  });
});

Deno.test("openStore applies schema twice idempotently", async () => {
  await withDatabase(async (db) => {
    const firstId = await db.store.insertMessage(message());

    const second = await openStore(db.url);
    try {
      const secondId = await second.insertMessage(message());
      assert.equal(BigInt(secondId), BigInt(firstId) + 1n);
    } finally {
      await second.close();
    }

    assert.equal(await countRows(db, "messages"), 2);
    assert.equal(await countRows(db, "message_recipients"), 2);
  });
});

Deno.test("openStore names server and cause when unreachable", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();

  const started = Date.now();
  await assert.rejects(
    openStore(`mysql://root@127.0.0.1:${port}/smtpstore_absent`),
    (error: Error) => {
      assert.match(error.message, new RegExp(`127\\.0\\.0\\.1:${port}`));
      assert.match(error.message, /smtpstore_absent/);
      assert.match(error.message, /ECONNREFUSED/);
      return true;
    },
  );
  assert.ok(Date.now() - started < 5000);
});

Deno.test("openStore rejects invalid database names", async (t) => {
  for (const name of ["bad-name", "a%3Bdrop", "x%60y", "a.b"]) {
    await t.step(name, async () => {
      await assert.rejects(
        openStore(`mysql://root@127.0.0.1:3306/${name}`),
        (error: Error) => {
          assert.match(
            error.message,
            /database name .* is not 1 to 64 letters/,
          );
          const decoded = decodeURIComponent(name);
          assert.ok(error.message.includes(JSON.stringify(decoded)));
          return true;
        },
      );
    });
  }
});

Deno.test("splitStatements returns one statement per table", async () => {
  const schema = await Deno.readTextFile(
    new URL("../sql/schema.sql", import.meta.url),
  );
  const statements = splitStatements(schema);
  assert.equal(statements.length, TABLES.length);
  for (const statement of statements) {
    assert.match(statement, /^CREATE TABLE IF NOT EXISTS \w+ \(/);
  }
});

Deno.test("insertMessage stores every column exactly", async () => {
  await withDatabase(async (db) => {
    const raw = new Uint8Array(1024);
    for (let i = 0; i < raw.length; i++) raw[i] = i % 256;
    const id = await db.store.insertMessage(message({
      sender: "",
      recipients: [
        "Bob@Example.com",
        "carol@example.com",
        "bob@example.com",
        "BOB@EXAMPLE.COM",
      ],
      raw,
      subject: "Grüße 😀 from a \u{1F680}",
      date: new Date("2026-02-03T04:05:06.789Z"),
      body: "line one\nline two 😀\n",
      receivedAt: new Date("2026-02-03T04:05:07.001Z"),
      clientAddress: "2001:db8::1",
      helo: "[IPv6:2001:db8::1]",
    }));
    assert.match(id, /^[1-9][0-9]*$/);

    const rows = await db.query("SELECT * FROM messages");
    assert.equal(rows.length, 1);
    const row = rows[0]!;
    assert.equal(String(row.id), id);
    assert.equal(row.sender, "");
    assert.notEqual(row.sender, null);
    assert.equal(row.subject, "Grüße 😀 from a \u{1F680}");
    assert.deepEqual(row.date, new Date("2026-02-03T04:05:06.789Z"));
    assert.equal(row.body, "line one\nline two 😀\n");
    assert.ok(Buffer.isBuffer(row.raw));
    assert.equal(Buffer.compare(row.raw as Buffer, Buffer.from(raw)), 0);
    assert.equal(Number(row.size), 1024);
    assert.deepEqual(row.received_at, new Date("2026-02-03T04:05:07.001Z"));
    assert.equal(row.client_address, "2001:db8::1");
    assert.equal(row.helo, "[IPv6:2001:db8::1]");

    const recipients = await db.query(
      "SELECT message_id, address FROM message_recipients ORDER BY address",
    );
    assert.deepEqual(recipients.map((r) => r.address), [
      "Bob@Example.com",
      "carol@example.com",
    ]);
    for (const r of recipients) assert.equal(String(r.message_id), id);
  });
});

Deno.test("insertMessage stores dates as UTC text", async () => {
  await withDatabase(async (db) => {
    await db.store.insertMessage(message({
      date: new Date("2026-12-31T23:59:59.999-05:00"),
      receivedAt: new Date("2026-06-01T00:00:00.000+02:00"),
    }));
    const rows = await db.query(
      "SELECT CAST(date AS CHAR) AS date, CAST(received_at AS CHAR) AS" +
        " received FROM messages",
    );
    assert.equal(rows[0]?.date, "2027-01-01 04:59:59.999");
    assert.equal(rows[0]?.received, "2026-05-31 22:00:00.000");
  });
});

Deno.test("insertMessage stores missing or odd dates as NULL", async (t) => {
  await withDatabase(async (db) => {
    const cases: [string, Date | null][] = [
      ["missing", null],
      ["invalid", new Date(NaN)],
      ["before year 1000", new Date("0999-12-31T00:00:00Z")],
      ["after year 9999", new Date("+010000-01-01T00:00:00Z")],
    ];
    for (const [name, date] of cases) {
      await t.step(name, async () => {
        const id = await db.store.insertMessage(message({ date }));
        const rows = await db.query(
          "SELECT date FROM messages WHERE id = ?",
          [id],
        );
        assert.equal(rows[0]?.date, null);
      });
    }
  });
});

Deno.test("insertMessage round-trips SQL metacharacters", async () => {
  await withDatabase(async (db) => {
    const nasty = `'"\\%_;--\`\0 /* */ '); DROP TABLE messages; --`;
    const id = await db.store.insertMessage(message({
      sender: `"o'brien\\%_"@example.com`,
      recipients: [`"x'; DROP TABLE users; --"@example.com`, "a%_@b"],
      raw: new TextEncoder().encode(nasty),
      subject: nasty,
      body: nasty,
      clientAddress: nasty,
      helo: nasty,
    }));

    const rows = await db.query("SELECT * FROM messages WHERE id = ?", [id]);
    const row = rows[0]!;
    assert.equal(row.sender, `"o'brien\\%_"@example.com`);
    assert.equal(row.subject, nasty);
    assert.equal(row.body, nasty);
    assert.equal((row.raw as Buffer).toString("utf8"), nasty);
    assert.equal(row.client_address, nasty);
    assert.equal(row.helo, nasty);
    const recipients = await db.query(
      "SELECT address FROM message_recipients ORDER BY address",
    );
    assert.deepEqual(recipients.map((r) => r.address), [
      `"x'; DROP TABLE users; --"@example.com`,
      "a%_@b",
    ]);
    assert.equal(await countRows(db, "users"), 0);
  });
});

Deno.test("insertMessage stores 10 MiB raw with large body", async () => {
  await withDatabase(async (db) => {
    const raw = new Uint8Array(10 * 1024 * 1024);
    crypto.getRandomValues(raw.subarray(0, 65536));
    for (let i = 65536; i < raw.length; i++) raw[i] = raw[i % 65536]!;
    // The raw message and the body together exceed max_allowed_packet
    // (16 MiB by default), so they go in separate statements.
    const body = "ü".repeat(4 * 1024 * 1024);
    const id = await db.store.insertMessage(message({ raw, body }));

    const rows = await db.query(
      "SELECT LENGTH(raw) AS raw_bytes, SHA2(raw, 256) AS raw_hash," +
        " CHAR_LENGTH(body) AS body_chars, SHA2(body, 256) AS body_hash," +
        " size FROM messages WHERE id = ?",
      [id],
    );
    const row = rows[0]!;
    assert.equal(Number(row.raw_bytes), raw.length);
    assert.equal(row.raw_hash, await sha256Hex(raw));
    assert.equal(Number(row.size), raw.length);
    assert.equal(Number(row.body_chars), body.length);
    assert.equal(
      row.body_hash,
      await sha256Hex(new TextEncoder().encode(body)),
    );
  });
});

Deno.test("insertMessage stores raw of maxRawBytes", async () => {
  await withDatabase(async (db) => {
    const store = db.store;
    assert.ok(store.maxAllowedPacket >= 1024 * 1024);
    assert.ok(store.maxRawBytes < store.maxAllowedPacket);

    const raw = new Uint8Array(store.maxRawBytes).fill(0x41);
    const id = await store.insertMessage(message({ raw, body: "short" }));
    const rows = await db.query(
      "SELECT LENGTH(raw) AS n, body FROM messages WHERE id = ?",
      [id],
    );
    assert.equal(Number(rows[0]?.n), store.maxRawBytes);
    assert.equal(rows[0]?.body, "short");

    const tooLarge = new Uint8Array(store.maxRawBytes + 1);
    await assert.rejects(
      store.insertMessage(message({ raw: tooLarge })),
      (error: Error) => {
        assert.ok(!(error instanceof StoreUnavailableError));
        assert.match(error.message, /max_allowed_packet/);
        return true;
      },
    );
    assert.equal(await countRows(db, "messages"), 1);
  });
});

Deno.test("insertMessage failing midway leaves no rows", async () => {
  await withDatabase(async (db) => {
    // The messages row is inserted first; the recipient is too long for
    // its column, so the second INSERT of the transaction fails.
    const tooLong = "x".repeat(400) + "@example.com";
    await assert.rejects(
      db.store.insertMessage(message({
        recipients: ["ok@example.com", tooLong],
      })),
      (error: Error) => {
        assert.ok(!(error instanceof StoreUnavailableError));
        return true;
      },
    );
    assert.equal(await countRows(db, "messages"), 0);
    assert.equal(await countRows(db, "message_recipients"), 0);

    // The connection went back to the pool in a usable state.
    const id = await db.store.insertMessage(message());
    assert.match(id, /^\d+$/);
    assert.equal(await countRows(db, "messages"), 1);
  });
});

Deno.test("findUsers matches VRFY arguments", async (t) => {
  await withDatabase(async (db) => {
    const users = [
      ["alice@example.com", "Alice Liddell"],
      ["bob@example.com", "Bob Smith"],
      ["bob@example.org", "Robert Other"],
      ["a_b@example.com", "Under Score"],
      ["axb@example.com", "X Marks"],
      ["axxb@example.com", "Two X"],
      ["x!y@example.com", "Bang"],
      ["c\\d@example.com", "Back Slash"],
      ["carol@one.example", "Carol One"],
      ["carol@two.example", "Carol Two"],
      ["carol@three.example", "Carol Three"],
      ["jose@example.com", "José Núñez"],
      ["empty@example.com", ""],
    ];
    for (const [address, name] of users) {
      await db.query("INSERT INTO users (address, name) VALUES (?, ?)", [
        address,
        name,
      ]);
    }

    const cases: [string, string[]][] = [
      ["alice@example.com", ["alice@example.com"]],
      ["ALICE@Example.COM", ["alice@example.com"]],
      ["alice", ["alice@example.com"]],
      ["ALICE", ["alice@example.com"]],
      ["Alice Liddell", ["alice@example.com"]],
      ["alice liddell", ["alice@example.com"]],
      ['"Alice Liddell"', ["alice@example.com"]],
      ["<alice@example.com>", ["alice@example.com"]],
      ["  alice  ", ["alice@example.com"]],
      ["bob", ["bob@example.com", "bob@example.org"]],
      ["Robert Other", ["bob@example.org"]],
      ["carol", ["carol@one.example", "carol@three.example"]],
      ["a_b", ["a_b@example.com"]],
      ["a%b", []],
      ["a%", []],
      ["%", []],
      ["_", []],
      ["a__b", []],
      ["x!y", ["x!y@example.com"]],
      ["x!", []],
      ["c\\d", ["c\\d@example.com"]],
      ["c\\", []],
      ["alice@example", []],
      ["Alice", ["alice@example.com"]],
      ["Liddell", []],
      ["nobody", []],
      ["", []],
      ['""', []],
      ["<>", []],
      ["JOSÉ NÚÑEZ", ["jose@example.com"]],
      ["Jose Nunez", []],
      ["\x01", []],
      ["\x7f", []],
      ["\x01alice@example.com", []],
      ["ali\x01ce", []],
    ];
    for (const [query, expected] of cases) {
      await t.step(JSON.stringify(query), async () => {
        const found = await db.store.findUsers(query);
        assert.deepEqual(found.map((user) => user.address), expected);
      });
    }

    const [alice] = await db.store.findUsers("alice");
    assert.deepEqual(alice, {
      address: "alice@example.com",
      name: "Alice Liddell",
    });
  });
});

Deno.test("expandGroup lists members with user names", async (t) => {
  await withDatabase(async (db) => {
    await db.query(
      "INSERT INTO users (address, name) VALUES" +
        " ('alice@example.com', 'Alice Liddell')," +
        " ('bob@example.com', 'Bob Smith')," +
        " ('nameless@example.com', '')",
    );
    await db.query(
      "INSERT INTO mail_groups (name) VALUES ('Staff'), ('Empty')",
    );
    const members = [
      "outsider@elsewhere.net",
      "bob@example.com",
      "ALICE@example.com",
      "nameless@example.com",
    ];
    for (const address of members) {
      await db.query(
        "INSERT INTO group_members (group_id, address)" +
          " SELECT id, ? FROM mail_groups WHERE name = 'Staff'",
        [address],
      );
    }

    const expected = [
      { address: "ALICE@example.com", name: "Alice Liddell" },
      { address: "bob@example.com", name: "Bob Smith" },
      { address: "nameless@example.com", name: null },
      { address: "outsider@elsewhere.net", name: null },
    ];
    for (const name of ["Staff", "staff", "STAFF", " staff "]) {
      await t.step(JSON.stringify(name), async () => {
        assert.deepEqual(await db.store.expandGroup(name), expected);
      });
    }
    await t.step("empty group", async () => {
      assert.deepEqual(await db.store.expandGroup("empty"), []);
    });
    await t.step("unknown group", async () => {
      assert.deepEqual(await db.store.expandGroup("nobody"), []);
      assert.deepEqual(await db.store.expandGroup("%"), []);
      assert.deepEqual(await db.store.expandGroup(""), []);
      assert.deepEqual(await db.store.expandGroup("st\x01aff"), []);
      assert.deepEqual(await db.store.expandGroup("Stäff"), []);
    });
  });
});

Deno.test("close is idempotent and later calls fail", async () => {
  await withDatabase(async (db) => {
    const store = await openStore(db.url);
    await store.close();
    await store.close();
    await assert.rejects(
      store.insertMessage(message()),
      StoreUnavailableError,
    );
    await assert.rejects(store.findUsers("alice"), StoreUnavailableError);
  });
});

Deno.test("store recovers after connections are cut", async () => {
  await withProxiedStore({
    connectionLimit: 2,
    queryTimeoutMs: 10_000,
  }, async ({ db, proxy, store }) => {
    await store.insertMessage(message({ subject: "before" }));
    assert.ok(proxy.connectionCount >= 1);

    await proxy.cut();
    const started = Date.now();
    await assert.rejects(
      store.insertMessage(message({ subject: "during" })),
      StoreUnavailableError,
    );
    await assert.rejects(store.findUsers("alice"), StoreUnavailableError);
    await assert.rejects(store.expandGroup("staff"), StoreUnavailableError);
    assert.ok(Date.now() - started < 2000, "failure took too long");

    proxy.restore();
    await store.insertMessage(message({ subject: "after" }));
    assert.deepEqual(await store.findUsers("nobody"), []);

    const rows = await db.query("SELECT subject FROM messages ORDER BY id");
    assert.deepEqual(rows.map((row) => row.subject), ["before", "after"]);
  });
});

Deno.test("store replaces pooled connections closed by server", async () => {
  await withDatabase(async (db) => {
    const proxy = startProxy(db);
    let store: MysqlStore | undefined;
    try {
      await captureLog(async (lines) => {
        store = await openStore(proxiedUrl(db, proxy), { connectionLimit: 3 });
        await Promise.all([1, 2, 3].map(() => store!.insertMessage(message())));

        // Like a MySQL restart between two messages: every pooled
        // connection is closed, and the server is back at once.
        await proxy.cut();
        proxy.restore();
        await store.insertMessage(message());
        assert.deepEqual(await store.findUsers("nobody"), []);

        assert.equal(countEvents(lines, "store_unavailable"), 0);
        assert.equal(await countRows(db, "messages"), 4);
      });
    } finally {
      proxy.restore();
      await store?.close();
      await proxy.close();
    }
  });
});

Deno.test("store logs each availability change once", async () => {
  await withDatabase(async (db) => {
    const proxy = startProxy(db);
    let store: MysqlStore | undefined;
    try {
      await captureLog(async (lines) => {
        store = await openStore(proxiedUrl(db, proxy), { connectionLimit: 2 });
        await store.insertMessage(message());
        assert.equal(countEvents(lines, "store_unavailable"), 0);

        await proxy.cut();
        for (let i = 0; i < 5; i++) {
          await assert.rejects(
            store.insertMessage(message()),
            StoreUnavailableError,
          );
        }
        const unavailable = lines.filter((line) =>
          line.includes(" event=store_unavailable")
        );
        assert.equal(unavailable.length, 1);
        assert.match(unavailable[0]!, / warn event=store_unavailable error=/);
        assert.equal(countEvents(lines, "store_available"), 0);

        proxy.restore();
        for (let i = 0; i < 3; i++) await store.insertMessage(message());
        const available = lines.filter((line) =>
          line.includes(" event=store_available")
        );
        assert.equal(available.length, 1);
        assert.match(available[0]!, / info event=store_available$/);

        await proxy.cut();
        await assert.rejects(store.findUsers("x"), StoreUnavailableError);
        await assert.rejects(store.findUsers("x"), StoreUnavailableError);
        assert.equal(countEvents(lines, "store_unavailable"), 2);
        proxy.restore();
        await store.findUsers("x");
        assert.equal(countEvents(lines, "store_available"), 2);
      });
    } finally {
      proxy.restore();
      await store?.close();
      await proxy.close();
    }
  });
});

Deno.test("statement on silent network times out", async () => {
  await withProxiedStore({
    connectionLimit: 2,
    queryTimeoutMs: 500,
    connectTimeoutMs: 500,
  }, async ({ db, proxy, store }) => {
    await store.insertMessage(message({ subject: "before" }));

    proxy.stall();
    let started = Date.now();
    await assert.rejects(
      store.insertMessage(message({ subject: "lost" })),
      (error: Error) => {
        assert.ok(error instanceof StoreUnavailableError);
        assert.match(error.message, /timed out/);
        return true;
      },
    );
    let elapsed = Date.now() - started;
    assert.ok(elapsed >= 400, `took ${elapsed} ms`);
    assert.ok(elapsed < 3000, `took ${elapsed} ms`);

    // A new connection gets no handshake from the silent network.
    await proxy.cut();
    proxy.restore();
    proxy.stall();
    started = Date.now();
    await assert.rejects(store.findUsers("alice"), StoreUnavailableError);
    elapsed = Date.now() - started;
    assert.ok(elapsed < 3000, `took ${elapsed} ms`);

    proxy.restore();
    await store.insertMessage(message({ subject: "after" }));
    const rows = await db.query("SELECT subject FROM messages ORDER BY id");
    assert.deepEqual(rows.map((row) => row.subject), ["before", "after"]);
  });
});

Deno.test("close finishes while network is silent", async () => {
  await withDatabase(async (db) => {
    const proxy = startProxy(db);
    try {
      await captureLog(async () => {
        const store = await openStore(proxiedUrl(db, proxy), {
          connectionLimit: 2,
          queryTimeoutMs: 500,
          connectTimeoutMs: 500,
        });
        await Promise.all([1, 2].map(() => store.insertMessage(message())));

        proxy.stall();
        const pending = assert.rejects(
          store.findUsers("alice"),
          StoreUnavailableError,
        );
        const started = Date.now();
        await store.close();
        const elapsed = Date.now() - started;
        assert.ok(elapsed < 3000, `took ${elapsed} ms`);
        await pending;
      });
    } finally {
      await proxy.close();
    }
  });
});

Deno.test("cut during insert stores all or nothing", async () => {
  await withProxiedStore(
    { connectionLimit: 2 },
    async ({ db, proxy, store }) => {
      const raw = new Uint8Array(8 * 1024 * 1024).fill(0x42);
      const pending = store.insertMessage(message({ subject: "big", raw }));
      await new Promise((resolve) => setTimeout(resolve, 5));
      await proxy.cut();
      let stored: boolean;
      try {
        await pending;
        stored = true;
      } catch (error) {
        assert.ok(error instanceof StoreUnavailableError, String(error));
        stored = false;
      }

      // Give the server a moment to roll back the dropped transaction.
      await new Promise((resolve) => setTimeout(resolve, 200));
      const messages = await db.query(
        "SELECT id FROM messages WHERE subject = 'big'",
      );
      assert.equal(messages.length, stored ? 1 : 0);
      assert.equal(await countRows(db, "message_recipients"), stored ? 1 : 0);
    },
  );
});

Deno.test("pool leaks no connections after failures", async () => {
  await withProxiedStore({
    connectionLimit: 3,
    queryTimeoutMs: 2000,
  }, async ({ db, proxy, store }) => {
    for (let round = 0; round < 3; round++) {
      await Promise.all(
        Array.from({ length: 6 }, () => store!.insertMessage(message())),
      );
      await proxy.cut();
      const failures = await Promise.allSettled(
        Array.from({ length: 20 }, () => store!.insertMessage(message())),
      );
      for (const failure of failures) {
        assert.equal(failure.status, "rejected");
        const reason = (failure as PromiseRejectedResult).reason;
        assert.ok(reason instanceof StoreUnavailableError, String(reason));
      }
      proxy.restore();
    }

    // A pool that kept dead connections would wait for a free one here
    // and time out.
    await Promise.all(
      Array.from({ length: 10 }, () => store!.insertMessage(message())),
    );
    assert.ok(proxy.connectionCount <= 3, `${proxy.connectionCount} open`);
    assert.equal(await countRows(db, "messages"), 3 * 6 + 10);

    const processes = await db.query(
      "SELECT COUNT(*) AS n FROM information_schema.processlist" +
        " WHERE db = ?",
      [db.name],
    );
    // The proxied store, the helper's store and the helper connection.
    assert.ok(Number(processes[0]?.n) <= 3 + 1 + 1);
  });
});
