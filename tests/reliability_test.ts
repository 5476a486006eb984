/**
 * Reliability tests over real sockets against a real MariaDB. A TCP proxy
 * between the store and MariaDB simulates MySQL outages. Other tests cover
 * clients that vanish mid-session, the shutdown of the real process on
 * SIGTERM and SIGINT, SQL metacharacters in mail and in VRFY and EXPN, and
 * the log lines of sessions and messages.
 */

import assert from "node:assert/strict";
import type { Config } from "../src/config.ts";
import {
  type GroupMember,
  type MysqlStore,
  type NewMessage,
  openStore,
  type Store,
  type StoreOptions,
  type User,
} from "../src/store.ts";
import { createTestDatabase, type TestDatabase } from "./helpers/database.ts";
import {
  startTestServer,
  type TestServer,
  withServer,
} from "./helpers/server.ts";
import {
  type ServerProcess,
  startServerProcess,
} from "./helpers/server_process.ts";
import { type ParsedReply, RawClient } from "./helpers/smtp_client.ts";
import { StatementProxy } from "./helpers/statement_proxy.ts";
import { TcpProxy } from "./helpers/tcp_proxy.ts";
import { captureLog } from "./helpers/log_capture.ts";

const RECIPIENTS = [
  "one@example.net",
  "two@example.net",
  "three@example.net",
] as const;

/**
 * Options of the store behind a proxy. Two pool connections make a leaked
 * connection show within a few messages, and short timeouts keep a
 * stalled statement from holding a test for 30 seconds.
 */
const PROXIED_STORE_OPTIONS: StoreOptions = {
  connectionLimit: 2,
  queryTimeoutMs: 1500,
  connectTimeoutMs: 1000,
};

// ---------------------------------------------------------------------------
// Fixtures

/**
 * A store that forwards to another one set after the server has started,
 * so the server's own test database can be reached through a proxy.
 */
class ForwardingStore implements Store {
  target: Store | undefined;

  insertMessage(message: NewMessage): Promise<string> {
    return this.#store().insertMessage(message);
  }

  findUsers(query: string): Promise<User[]> {
    return this.#store().findUsers(query);
  }

  expandGroup(name: string): Promise<GroupMember[]> {
    return this.#store().expandGroup(name);
  }

  #store(): Store {
    if (this.target === undefined) throw new Error("no store set yet");
    return this.target;
  }
}

interface Proxy {
  readonly port: number;
  close(): Promise<void>;
}

interface Fixture<P extends Proxy> {
  readonly server: TestServer;
  readonly proxy: P;
  readonly store: MysqlStore;
}

/**
 * Runs a test against a server whose store reaches its test database
 * through the proxy that `startProxy` returns for MySQL's port.
 */
async function withStoreBehind<P extends Proxy>(
  startProxy: (mysqlPort: number) => P,
  overrides: Partial<Config>,
  test: (fixture: Fixture<P>) => Promise<void>,
): Promise<void> {
  const forwarding = new ForwardingStore();
  const server = await startTestServer(overrides, forwarding);
  const url = new URL(server.database.url);
  const proxy = startProxy(url.port === "" ? 3306 : Number(url.port));
  url.port = String(proxy.port);
  let store: MysqlStore | undefined;
  try {
    store = await openStore(url.href, PROXIED_STORE_OPTIONS);
    forwarding.target = store;
    await test({ server, proxy, store });
  } finally {
    if (proxy instanceof TcpProxy) proxy.restore();
    await server.server.shutdown(0);
    await store?.close();
    await proxy.close();
    await server.close();
  }
}

/** Returns a stand-in for a proxy, so the store connects to MySQL directly. */
function noProxy(mysqlPort: number): Proxy {
  return { port: mysqlPort, close: () => Promise.resolve() };
}

function eventLines(lines: readonly string[], event: string): string[] {
  return lines.filter((line) => line.includes(` event=${event}`));
}

/** Returns the value of `key=` in a log line, unquoted. */
function logField(line: string, key: string): string | undefined {
  const match = new RegExp(` ${key}=("(?:[^"\\\\]|\\\\.)*"|\\S*)`).exec(line);
  if (match === null) return undefined;
  const value = match[1]!;
  return value.startsWith('"') ? JSON.parse(value) : value;
}

async function waitFor(
  condition: () => boolean | Promise<boolean>,
  description: string,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting: ${description}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function waitForNoSessions(server: TestServer): Promise<void> {
  await waitFor(
    () => server.server.connectionCount === 0,
    `connectionCount is ${server.server.connectionCount}, expected 0`,
  );
}

// ---------------------------------------------------------------------------
// SMTP

/** Builds a message whose last line names it, so a truncated raw shows. */
function messageData(subject: string, body = "Hello.\r\n"): string {
  return "From: sender@example.com\r\nTo: one@example.net\r\n" +
    `Subject: ${subject}\r\n\r\n${body}${trailer(subject)}`;
}

function trailer(subject: string): string {
  return `End of ${subject}.\r\n`;
}

/** Builds a message of about `bytes` octets in 78-octet lines. */
function largeMessageData(subject: string, bytes: number): string {
  const line = "x".repeat(76) + "\r\n";
  return messageData(subject, line.repeat(Math.ceil(bytes / line.length)));
}

/** Connects, reads the greeting and sends EHLO. */
async function greetedClient(port: number): Promise<RawClient> {
  const client = await RawClient.greeted(port);
  try {
    assert.equal((await client.command("EHLO client.example")).code, 250);
  } catch (error) {
    client.close();
    throw error;
  }
  return client;
}

/** Sends MAIL, one RCPT per recipient and DATA, expecting 354. */
async function startData(
  client: RawClient,
  recipients: readonly string[] = RECIPIENTS,
  sender = "sender@example.com",
): Promise<void> {
  assert.equal((await client.command(`MAIL FROM:<${sender}>`)).code, 250);
  for (const recipient of recipients) {
    assert.equal((await client.command(`RCPT TO:<${recipient}>`)).code, 250);
  }
  assert.equal((await client.command("DATA")).code, 354);
}

/** Sends one message in a session of its own and returns the reply to it. */
async function sendMessage(
  port: number,
  data: string,
  recipients: readonly string[] = RECIPIENTS,
): Promise<ParsedReply> {
  const client = await greetedClient(port);
  try {
    await startData(client, recipients);
    await client.send(data + ".\r\n");
    return await client.readReply();
  } finally {
    client.close();
  }
}

/** Sends in pieces of 64 KiB, the way a real client fills the socket. */
async function sendInPieces(client: RawClient, data: string): Promise<void> {
  const piece = 64 * 1024;
  for (let offset = 0; offset < data.length; offset += piece) {
    await client.send(data.slice(offset, offset + piece));
  }
}

/** Expects a 421 and then the server closing the connection. */
async function assertClosedWith421(client: RawClient): Promise<void> {
  const reply = await client.readReply();
  assert.equal(reply.code, 421, reply.lines.join(" | "));
  assert.match(reply.enhancedStatusCode ?? "", /^4\./);
  assert.ok(await client.closedByServer(), "server closed the connection");
}

// ---------------------------------------------------------------------------
// Rows

interface StoredMessage {
  readonly id: string;
  readonly subject: string;
  readonly size: number;
  readonly rawLength: number;
  readonly recipients: number;
  /** The last 200 octets of raw, as latin1. */
  readonly tail: string;
}

async function storedMessages(db: TestDatabase): Promise<StoredMessage[]> {
  const rows = await db.query(
    `SELECT m.id, m.subject, m.size, LENGTH(m.raw) AS raw_length,
       (SELECT COUNT(*) FROM message_recipients r WHERE r.message_id = m.id)
         AS recipients,
       RIGHT(m.raw, 200) AS tail
     FROM messages m ORDER BY m.id`,
  );
  return rows.map((row) => ({
    id: String(row.id),
    subject: String(row.subject),
    size: Number(row.size),
    rawLength: Number(row.raw_length),
    recipients: Number(row.recipients),
    tail: new TextDecoder("latin1").decode(row.tail as Uint8Array),
  }));
}

/** Checks that a stored message has every recipient and its whole raw. */
function assertComplete(
  message: StoredMessage,
  recipients = RECIPIENTS.length,
): void {
  assert.equal(message.recipients, recipients, `recipients of ${message.id}`);
  assert.equal(message.rawLength, message.size, `raw length of ${message.id}`);
  assert.ok(
    message.tail.endsWith(trailer(message.subject)),
    `raw of ${message.id} ends with its last line`,
  );
}

async function countRecipientsWithoutMessage(
  db: TestDatabase,
): Promise<number> {
  const rows = await db.query(
    `SELECT COUNT(*) AS n FROM message_recipients r
     WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = r.message_id)`,
  );
  return Number(rows[0]?.n);
}

/** Counts the InnoDB transactions open on connections to the database. */
async function countOpenTransactions(db: TestDatabase): Promise<number> {
  const rows = await db.query(
    `SELECT COUNT(*) AS n FROM information_schema.INNODB_TRX t
     JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id
     WHERE p.DB = ? AND p.ID <> CONNECTION_ID()`,
    [db.name],
  );
  return Number(rows[0]?.n);
}

/**
 * Waits until MySQL has ended every transaction of the database, so a
 * connection the proxy has just closed is rolled back or committed.
 */
async function waitForNoTransactions(db: TestDatabase): Promise<void> {
  await waitFor(
    async () => (await countOpenTransactions(db)) === 0,
    "transactions still open in MySQL",
  );
}

// ---------------------------------------------------------------------------
// 1. MySQL faults

Deno.test("store outage while idle gives 421 after data", async () => {
  await withStoreBehind(TcpProxy.start, {}, async ({ server, proxy }) => {
    const before = await sendMessage(server.port, messageData("before"));
    assert.equal(before.code, 250);

    const client = await greetedClient(server.port);
    try {
      await startData(client);
      await proxy.cut();
      await client.send(messageData("during") + ".\r\n");
      await assertClosedWith421(client);
    } finally {
      client.close();
    }

    // The server still accepts sessions, and stores again once MySQL is
    // back, without a restart.
    const waiting = await RawClient.greeted(server.port);
    waiting.close();
    proxy.restore();
    const after = await sendMessage(server.port, messageData("after"));
    assert.equal(after.code, 250);

    const messages = await storedMessages(server.database);
    assert.deepEqual(messages.map((m) => m.subject), ["before", "after"]);
    for (const message of messages) assertComplete(message);
    await waitForNoSessions(server);
  });
});

Deno.test("store outage during large DATA gives 421", async () => {
  await withStoreBehind(TcpProxy.start, {}, async ({ server, proxy }) => {
    const data = largeMessageData("large", 3 * 1024 * 1024);
    const half = Math.floor(data.length / 2);
    const client = await greetedClient(server.port);
    try {
      await startData(client);
      await sendInPieces(client, data.slice(0, half));
      await proxy.cut();
      await sendInPieces(client, data.slice(half) + ".\r\n");
      await assertClosedWith421(client);
    } finally {
      client.close();
    }

    proxy.restore();
    const after = await sendMessage(server.port, messageData("after"));
    assert.equal(after.code, 250);
    const messages = await storedMessages(server.database);
    assert.deepEqual(messages.map((m) => m.subject), ["after"]);
    assertComplete(messages[0]!);
  });
});

Deno.test("store back before end of DATA stores message", async () => {
  await withStoreBehind(TcpProxy.start, {}, async ({ server, proxy }) => {
    const data = largeMessageData("large", 2 * 1024 * 1024);
    const half = Math.floor(data.length / 2);
    const client = await greetedClient(server.port);
    try {
      await startData(client);
      await sendInPieces(client, data.slice(0, half));
      await proxy.cut();
      proxy.restore();
      await sendInPieces(client, data.slice(half) + ".\r\n");
      assert.equal((await client.readReply()).code, 250);
    } finally {
      client.close();
    }

    const messages = await storedMessages(server.database);
    assert.equal(messages.length, 1);
    assertComplete(messages[0]!);
  });
});

Deno.test("COMMIT lost before MySQL gives 421, stores nothing", async () => {
  await withStoreBehind(StatementProxy.start, {}, async (fixture) => {
    const { server, proxy } = fixture;
    proxy.cutAt("COMMIT", "beforeStatement");
    const client = await greetedClient(server.port);
    try {
      await startData(client);
      await client.send(largeMessageData("lost", 1024 * 1024) + ".\r\n");
      await assertClosedWith421(client);
    } finally {
      client.close();
    }
    assert.equal(proxy.cutCount, 1, "the proxy cut at COMMIT");

    await waitForNoTransactions(server.database);
    assert.deepEqual(await storedMessages(server.database), []);
    assert.equal(await countRecipientsWithoutMessage(server.database), 0);

    const after = await sendMessage(server.port, messageData("after"));
    assert.equal(after.code, 250);
    const messages = await storedMessages(server.database);
    assert.deepEqual(messages.map((m) => m.subject), ["after"]);
    assertComplete(messages[0]!);
  });
});

// A COMMIT that MySQL ran but whose OK never came back: the store looks
// the row up on another connection and finds it, so the client gets 250
// and has no reason to send the message twice.
Deno.test("COMMIT acknowledgement lost keeps one full row", async () => {
  await withStoreBehind(StatementProxy.start, {}, async (fixture) => {
    const { server, proxy } = fixture;
    proxy.cutAt("COMMIT", "afterStatement");
    const client = await greetedClient(server.port);
    let reply: ParsedReply;
    try {
      await startData(client);
      await client.send(largeMessageData("committed", 1024 * 1024) + ".\r\n");
      reply = await client.readReply();
    } finally {
      client.close();
    }
    assert.equal(proxy.cutCount, 1, "the proxy cut after COMMIT");
    assert.equal(reply.code, 250, reply.lines.join(" | "));

    await waitForNoTransactions(server.database);
    const messages = await storedMessages(server.database);
    assert.equal(messages.length, 1);
    assertComplete(messages[0]!);

    const after = await sendMessage(server.port, messageData("after"));
    assert.equal(after.code, 250);
    assert.equal((await storedMessages(server.database)).length, 2);
  });
});

Deno.test("outage at end of data never splits a message", async (t) => {
  await withStoreBehind(TcpProxy.start, {}, async ({ server, proxy }) => {
    // When this test was written, the server stored a 4 MiB message 60 to
    // 150 ms after its final dot. The delays span that range, so the fault
    // falls before, during or after the INSERT and the COMMIT. The checks
    // hold whatever the timing.
    const delaysMs = [0, 30, 60, 80, 100, 120, 150, 250];
    for (const mode of ["cut", "stall"] as const) {
      for (const delayMs of delaysMs) {
        const subject = `${mode} after ${delayMs} ms`;
        await t.step(subject, async () => {
          const data = largeMessageData(subject, 4 * 1024 * 1024);
          const client = await greetedClient(server.port);
          let reply: ParsedReply;
          try {
            await startData(client);
            await sendInPieces(client, data);
            await client.send(".\r\n");
            await new Promise((resolve) => setTimeout(resolve, delayMs));
            if (mode === "cut") await proxy.cut();
            else proxy.stall();
            reply = await client.readReply();
          } finally {
            client.close();
          }
          proxy.restore();
          await waitForNoTransactions(server.database);

          const rows = (await storedMessages(server.database))
            .filter((message) => message.subject === subject);
          assert.ok([250, 421].includes(reply.code), reply.lines.join(" | "));
          if (reply.code === 250) assert.equal(rows.length, 1);
          // 421 with a row: the COMMIT ran but its OK was lost.
          else assert.ok(rows.length <= 1, `${rows.length} rows`);
          for (const row of rows) assertComplete(row);
          assert.equal(
            await countRecipientsWithoutMessage(server.database),
            0,
          );
        });
      }
    }

    const after = await sendMessage(server.port, messageData("after"));
    assert.equal(after.code, 250);
    await waitForNoSessions(server);
  });
});

Deno.test("VRFY and EXPN during store outage get 421", async () => {
  await withStoreBehind(TcpProxy.start, {}, async ({ server, proxy }) => {
    const db = server.database;
    await db.query("INSERT INTO users (address, name) VALUES (?, ?)", [
      "alice@example.com",
      "Alice Liddell",
    ]);
    await db.query("INSERT INTO mail_groups (id, name) VALUES (1, 'staff')");
    await db.query(
      "INSERT INTO group_members (group_id, address) VALUES (1, ?)",
      ["alice@example.com"],
    );

    await proxy.cut();
    for (const command of ["VRFY alice", "EXPN staff"]) {
      const client = await greetedClient(server.port);
      try {
        await client.send(command + "\r\n");
        await assertClosedWith421(client);
      } finally {
        client.close();
      }
    }

    proxy.restore();
    const client = await greetedClient(server.port);
    try {
      assert.equal((await client.command("VRFY alice")).code, 250);
      assert.equal((await client.command("EXPN staff")).code, 250);
    } finally {
      client.close();
    }
  });
});

Deno.test("store outage is logged once per change", async () => {
  const overrides = { logLevel: "info" } as const;
  await withStoreBehind(TcpProxy.start, overrides, async (fixture) => {
    const { server, proxy } = fixture;
    await captureLog(async (lines) => {
      const first = await sendMessage(server.port, messageData("first"));
      assert.equal(first.code, 250);

      await proxy.cut();
      const outageStart = lines.length;
      for (let i = 0; i < 5; i++) {
        const reply = await sendMessage(server.port, messageData(`lost ${i}`));
        assert.equal(reply.code, 421);
      }
      await waitForNoSessions(server);
      const outage = lines.slice(outageStart);
      assert.equal(eventLines(outage, "store_unavailable").length, 1);
      // Nothing else at warn or error repeats once per failed message.
      const problems = outage.filter((line) => / (warn|error) /.test(line));
      const byEvent = new Map<string, number>();
      for (const line of problems) {
        const event = logField(line, "event") ?? "";
        byEvent.set(event, (byEvent.get(event) ?? 0) + 1);
      }
      for (const [event, count] of byEvent) {
        assert.ok(count < 5, `${event} logged ${count} times`);
      }

      proxy.restore();
      for (let i = 0; i < 3; i++) {
        const reply = await sendMessage(server.port, messageData(`back ${i}`));
        assert.equal(reply.code, 250);
      }
      assert.equal(eventLines(lines, "store_available").length, 1);
      assert.equal(eventLines(lines, "store_unavailable").length, 1);
      await waitForNoSessions(server);
    });
  });
});

// The store's statement timeout (30 s by default) is longer than any
// sensible grace period, so a session waiting on a silent MySQL must not
// hold the shutdown past the grace period.
Deno.test("shutdown grace bounds a stalled store", async () => {
  await withStoreBehind(TcpProxy.start, {}, async ({ server, proxy }) => {
    const client = await greetedClient(server.port);
    try {
      await startData(client);
      proxy.stall();
      await client.send(messageData("stalled") + ".\r\n");
      await new Promise((resolve) => setTimeout(resolve, 100));

      const graceMs = 200;
      const started = Date.now();
      await server.server.shutdown(graceMs);
      const elapsed = Date.now() - started;
      assert.ok(elapsed < graceMs + 500, `shutdown took ${elapsed} ms`);
      assert.equal(server.server.connectionCount, 0);
    } finally {
      client.close();
    }
  });
});

// ---------------------------------------------------------------------------
// 2. Clients that disconnect

Deno.test("disconnects leave no partial rows or leaks", async () => {
  await withStoreBehind(TcpProxy.start, {}, async ({ server, proxy }) => {
    const db = server.database;
    const warmUp = await sendMessage(server.port, messageData("warm-up"));
    assert.equal(warmUp.code, 250);

    for (let round = 0; round < 4; round++) {
      // In the middle of a command line.
      const command = await RawClient.greeted(server.port);
      await command.send("EHLO client.example\r\nMAIL FROM:<sender@exa");
      command.close();

      // In the middle of the mail data.
      const data = largeMessageData(`cut data ${round}`, 512 * 1024);
      const partial = await greetedClient(server.port);
      await startData(partial);
      await partial.send(data.slice(0, Math.floor(data.length / 2)));
      partial.close();

      // Right after the final dot, before the reply.
      const complete = await greetedClient(server.port);
      await startData(complete);
      const subject = `sent ${round}`;
      await complete.send(largeMessageData(subject, 256 * 1024) + ".\r\n");
      complete.close();
    }

    await waitForNoSessions(server);
    await waitForNoTransactions(db);
    const messages = await storedMessages(db);
    for (const message of messages) assertComplete(message);
    const subjects = messages.map((message) => message.subject).sort();
    assert.ok(
      subjects.every((subject) => !subject.startsWith("cut data")),
      `stored: ${subjects.join(", ")}`,
    );
    // The server reads the whole data before it detects that the client left, so
    // every message that reached its final dot is stored. Stores run in
    // parallel with later sessions, so ids do not follow the rounds.
    assert.deepEqual(subjects, [
      "sent 0",
      "sent 1",
      "sent 2",
      "sent 3",
      "warm-up",
    ]);
    assert.equal(await countRecipientsWithoutMessage(db), 0);

    // The pool has two connections: a leaked one would make these wait
    // for a free connection, time out, and get 421.
    assert.ok(
      proxy.connectionCount <= PROXIED_STORE_OPTIONS.connectionLimit!,
      `${proxy.connectionCount} store connections open`,
    );
    for (let i = 0; i < 4; i++) {
      const reply = await sendMessage(server.port, messageData(`after ${i}`));
      assert.equal(reply.code, 250);
    }
    await waitForNoSessions(server);
  });
});

Deno.test("disconnect during store reply leaves server usable", async () => {
  await withStoreBehind(noProxy, {}, async ({ server }) => {
    // Several clients leave right after their final dot at the same time,
    // so the pool is busy while their replies fail to go out.
    const clients = await Promise.all(
      [0, 1, 2, 3, 4, 5].map(async (index) => {
        const client = await greetedClient(server.port);
        await startData(client);
        return { client, data: messageData(`parallel ${index}`) };
      }),
    );
    await Promise.all(clients.map(async ({ client, data }) => {
      await client.send(data + ".\r\n");
      client.close();
    }));

    await waitForNoSessions(server);
    await waitForNoTransactions(server.database);
    const messages = await storedMessages(server.database);
    assert.equal(messages.length, 6);
    for (const message of messages) assertComplete(message);

    const after = await sendMessage(server.port, messageData("after"));
    assert.equal(after.code, 250);
  });
});

// ---------------------------------------------------------------------------
// 3. Shutdown of the real process

/** Expects the port to refuse connections. */
async function assertRefused(port: number): Promise<void> {
  let conn: Deno.Conn | undefined;
  try {
    conn = await Deno.connect({ hostname: "127.0.0.1", port });
  } catch (error) {
    assert.ok(error instanceof Deno.errors.ConnectionRefused, String(error));
    return;
  }
  conn.close();
  assert.fail(`port ${port} still accepts connections`);
}

const MARKER = "marker-b7c2e9f41d";

interface ProcessFixture {
  readonly db: TestDatabase;
  readonly server: ServerProcess;
  /** Clients the test opens; closed after it. */
  readonly clients: RawClient[];
}

/**
 * Runs a test against main.ts started as a process on a fresh database,
 * then closes the clients, the process and the database.
 */
async function withServerProcess(
  env: Record<string, string>,
  test: (fixture: ProcessFixture) => Promise<void>,
): Promise<void> {
  const db = await createTestDatabase();
  const clients: RawClient[] = [];
  try {
    const server = await startServerProcess({ MYSQL_URL: db.url, ...env });
    try {
      await test({ db, server, clients });
    } finally {
      await server.close();
    }
  } finally {
    for (const client of clients) client.close();
    await db.close();
  }
}

/** Opens a session and sends the envelope up to DATA's 354. */
async function clientInData(fixture: ProcessFixture): Promise<RawClient> {
  const client = await greetedClient(fixture.server.port);
  fixture.clients.push(client);
  await startData(client);
  return client;
}

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.test(`${signal} lets DATA finish and exits 0`, async () => {
    const env = {
      SMTP_HOSTNAME: "mx.test.example",
      SHUTDOWN_GRACE_SECONDS: "10",
      LOG_LEVEL: "debug",
    };
    await withServerProcess(env, async (fixture) => {
      const { db, server, clients } = fixture;
      const idle = await greetedClient(server.port);
      clients.push(idle);
      const sending = await clientInData(fixture);
      const data = messageData(`${MARKER} subject`, `${MARKER} body\r\n`);
      const split = data.indexOf("\r\n\r\n");
      await sending.send(data.slice(0, split));

      const signalled = Date.now();
      server.signal(signal);
      await assertClosedWith421(idle);
      const waited = Date.now() - signalled;
      assert.ok(waited < 2000, `idle session waited ${waited} ms for 421`);
      await assertRefused(server.port);

      await sending.send(data.slice(split) + ".\r\n");
      const stored = await sending.readReply();
      assert.equal(stored.code, 250, stored.lines.join(" | "));
      await assertClosedWith421(sending);

      const status = await server.exited();
      assert.equal(status.code, 0);
      assert.equal(status.signal, null);
      await server.waitForLine(/ event=server_stop/);
      assert.equal(
        server.lines.filter((line) => line.includes(MARKER)).join("\n"),
        "",
      );

      const messages = await storedMessages(db);
      assert.equal(messages.length, 1);
      assertComplete(messages[0]!);
    });
  });
}

Deno.test("shutdown grace over sends 421, exits 0", async () => {
  const env = { SHUTDOWN_GRACE_SECONDS: "1" };
  await withServerProcess(env, async (fixture) => {
    const { db, server } = fixture;
    const client = await clientInData(fixture);
    await client.send("Subject: never finished\r\n\r\nfirst line\r\n");

    const signalled = Date.now();
    server.signal("SIGTERM");
    const reply = await client.readReply(5000);
    assert.equal(reply.code, 421);
    assert.ok(await client.closedByServer(), "server closed the session");
    const waited = Date.now() - signalled;
    assert.ok(waited >= 900, `closed after ${waited} ms, before the grace`);
    assert.ok(waited < 5000, `closed after ${waited} ms`);

    const status = await server.exited();
    assert.equal(status.code, 0);
    await server.waitForLine(/ event=shutdown_grace_over/);
    await server.waitForLine(/ event=server_stop/);
    assert.deepEqual(await storedMessages(db), []);
  });
});

Deno.test("signal twice at once stops gracefully", async () => {
  await withServerProcess({}, async ({ server, clients }) => {
    const client = await greetedClient(server.port);
    clients.push(client);
    // As Ctrl-C under deno task: the terminal's and the forwarded one.
    server.signal("SIGINT");
    server.signal("SIGINT");
    assert.equal((await client.readReply()).code, 421);
    const status = await server.exited();
    assert.equal(status.code, 0);
    await server.waitForLine(/ event=server_stop/);
  });
});

Deno.test("second signal stops within the grace period", async () => {
  const env = { SHUTDOWN_GRACE_SECONDS: "60" };
  await withServerProcess(env, async (fixture) => {
    const { db, server } = fixture;
    const client = await clientInData(fixture);
    await client.send("Subject: never finished\r\n\r\nfirst line\r\n");

    server.signal("SIGTERM");
    await server.waitForLine(/ event=server_stopping .*grace_seconds=60/);
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const signalled = Date.now();
    server.signal("SIGINT");
    const status = await server.exited();
    assert.equal(status.code, 1);
    assert.ok(Date.now() - signalled < 10_000, "stopped before the grace");
    await server.waitForLine(/ event=server_forced_stop signal=SIGINT/);
    assert.deepEqual(await storedMessages(db), []);
  });
});

// ---------------------------------------------------------------------------
// 4. SQL metacharacters

const INJECTIONS = [
  "'); DROP TABLE messages; --",
  '" OR "1"="1',
  "' OR '1'='1' -- ",
  "back\\slash \\' \\\" \\\\",
  "100% of _all_ rows; --",
  "*/ UNION SELECT address, name FROM users /*",
] as const;

Deno.test("SQL metacharacters are stored unchanged", async () => {
  await withServer({}, async (server) => {
    const db = server.database;
    // A quoted local part carries what a dot-string cannot: ; " \ and space.
    const senders = [
      `"');DROP TABLE messages;--\\"\\\\%_"@example.com`,
      "o'brien--100%_x@example.com",
    ];
    const recipient = `"x'; DROP TABLE message_recipients; --"@example.net`;
    const subject = INJECTIONS.join(" ");
    const bodyLines = [...INJECTIONS, `Subject: ${INJECTIONS[0]}`];

    for (const sender of senders) {
      const client = await greetedClient(server.port);
      try {
        await startData(client, [recipient], sender);
        const data = `From: <sender@example.com>\r\nSubject: ${subject}\r\n` +
          `\r\n${bodyLines.join("\r\n")}\r\n`;
        await client.send(data + ".\r\n");
        assert.equal((await client.readReply()).code, 250);
      } finally {
        client.close();
      }
    }

    const rows = await db.query(
      `SELECT m.sender, m.subject, m.body, m.raw, r.address
       FROM messages m JOIN message_recipients r ON r.message_id = m.id
       ORDER BY m.id`,
    );
    assert.equal(rows.length, 2);
    for (const [index, row] of rows.entries()) {
      assert.equal(row.sender, senders[index]);
      assert.equal(row.address, recipient);
      assert.equal(row.subject, subject);
      assert.equal(row.body, bodyLines.join("\n") + "\n");
      const raw = new TextDecoder().decode(row.raw as Uint8Array);
      assert.ok(
        raw.endsWith(`\r\n\r\n${bodyLines.join("\r\n")}\r\n`),
        "raw ends with the body as sent",
      );
    }
  });
});

Deno.test("VRFY and EXPN with SQL metacharacters get 550", async (t) => {
  await withServer({}, async (server) => {
    const db = server.database;
    await db.query("INSERT INTO users (address, name) VALUES (?, ?)", [
      "alice@example.com",
      "Alice Liddell",
    ]);
    await db.query("INSERT INTO mail_groups (id, name) VALUES (1, 'staff')");
    await db.query(
      "INSERT INTO group_members (group_id, address) VALUES (1, ?)",
      ["alice@example.com"],
    );

    // LIKE wildcards must not match alice either.
    const wildcards = ["%", "_lice", "a%", "%@example.com", "al!%", "staf_"];
    const client = await greetedClient(server.port);
    try {
      for (const verb of ["VRFY", "EXPN"]) {
        for (const argument of [...INJECTIONS, ...wildcards]) {
          await t.step(`${verb} ${argument}`, async () => {
            const reply = await client.command(`${verb} ${argument}`);
            assert.equal(reply.code, 550, reply.lines.join(" | "));
          });
        }
      }
      assert.equal((await client.command("VRFY alice")).code, 250);
      assert.equal((await client.command("EXPN staff")).code, 250);
    } finally {
      client.close();
    }

    const tables = await db.query(
      "SELECT table_name AS name FROM information_schema.tables" +
        " WHERE table_schema = ? ORDER BY table_name",
      [db.name],
    );
    assert.deepEqual(tables.map((row) => String(row.name)).sort(), [
      "group_members",
      "mail_groups",
      "message_recipients",
      "messages",
      "users",
    ]);
    const users = await db.query("SELECT address FROM users");
    assert.deepEqual(users.map((row) => row.address), ["alice@example.com"]);
    const members = await db.query("SELECT address FROM group_members");
    assert.equal(members.length, 1);
  });
});

// ---------------------------------------------------------------------------
// 5. Logs

/** Sends `count` messages in one session with the marker in each. */
async function sendSession(
  port: number,
  helo: string,
  count: number,
): Promise<string[]> {
  const client = await RawClient.greeted(port);
  const ids: string[] = [];
  try {
    assert.equal((await client.command(`EHLO ${helo}`)).code, 250);
    for (let i = 0; i < count; i++) {
      await startData(client, RECIPIENTS.slice(0, i + 1));
      const data = messageData(
        `${MARKER} subject ${i}`,
        `${MARKER} body ${i}\r\n`,
      );
      await client.send(data + ".\r\n");
      const reply = await client.readReply();
      assert.equal(reply.code, 250);
      const id = /stored as (\d+)/.exec(reply.lines[0]!)?.[1];
      assert.ok(id !== undefined, reply.lines[0]);
      ids.push(id);
    }
    assert.equal((await client.command("QUIT")).code, 221);
  } finally {
    client.close();
  }
  return ids;
}

Deno.test("log has session lines and no content", async () => {
  await withServer({ logLevel: "debug" }, async (server) => {
    await captureLog(async (lines) => {
      const first = await sendSession(server.port, "first.example", 2);
      const second = await sendSession(server.port, "second.example", 1);
      await waitForNoSessions(server);

      const starts = eventLines(lines, "session_start");
      const ends = eventLines(lines, "session_end");
      assert.equal(starts.length, 2);
      assert.equal(ends.length, 2);
      for (const line of [...starts, ...ends]) {
        assert.equal(logField(line, "client"), "127.0.0.1");
        assert.match(line, / info session=[0-9a-f]+ /);
      }
      const sessions = starts.map((line) => logField(line, "session"));
      assert.equal(new Set(sessions).size, 2);
      assert.deepEqual(ends.map((line) => logField(line, "session")), sessions);
      assert.deepEqual(ends.map((line) => logField(line, "helo")), [
        "first.example",
        "second.example",
      ]);
      assert.deepEqual(ends.map((line) => logField(line, "messages")), [
        "2",
        "1",
      ]);
      for (const line of ends) {
        assert.match(logField(line, "duration_ms") ?? "", /^\d+$/);
      }

      const stored = eventLines(lines, "stored");
      assert.deepEqual(stored.map((line) => logField(line, "id")), [
        ...first,
        ...second,
      ]);
      assert.deepEqual(stored.map((line) => logField(line, "recipients")), [
        "1",
        "2",
        "1",
      ]);
      const sizes = await server.database.query(
        "SELECT size FROM messages ORDER BY id",
      );
      assert.deepEqual(
        stored.map((line) => logField(line, "bytes")),
        sizes.map((row) => String(row.size)),
      );

      assert.ok(eventLines(lines, "command").length > 0, "debug is on");
      const leaks = lines.filter((line) => line.includes(MARKER));
      assert.deepEqual(leaks, []);
    });
  });
});

Deno.test("stored log line names the sender", async () => {
  await withServer({ logLevel: "info" }, async (server) => {
    await captureLog(async (lines) => {
      const reply = await sendMessage(server.port, messageData("sender"));
      assert.equal(reply.code, 250);
      await waitForNoSessions(server);

      const stored = eventLines(lines, "stored");
      assert.equal(stored.length, 1);
      assert.equal(logField(stored[0]!, "sender"), "sender@example.com");
    });
  });
});
