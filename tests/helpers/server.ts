/** An smtpstore server started in-process on a free loopback port. */

import assert from "node:assert/strict";

import { type Config, loadConfig } from "../../src/config.ts";
import { setLogLevel } from "../../src/log.ts";
import { SmtpServer } from "../../src/server.ts";
import type { Store } from "../../src/store.ts";
import { createTestDatabase, type TestDatabase } from "./database.ts";
import type { RawClient } from "./smtp_client.ts";

export interface TestServer {
  readonly port: number;
  readonly config: Config;
  readonly server: SmtpServer;
  readonly database: TestDatabase;
  /** Shuts the server down and drops the test database. */
  close(): Promise<void>;
}

/** The configuration tests start from; each test overrides what it checks. */
export function testConfig(overrides: Partial<Config> = {}): Config {
  const base = loadConfig({
    SMTP_HOST: "127.0.0.1",
    SMTP_PORT: "0",
    SMTP_HOSTNAME: "mx.test.example",
    MYSQL_URL: Deno.env.get("MYSQL_URL"),
    LOG_LEVEL: Deno.env.get("LOG_LEVEL") ?? "error",
  });
  return { ...base, ...overrides };
}

/**
 * Starts a server on a fresh test database. `store` replaces the database's
 * store, as for a store pointed at a closed port.
 */
export async function startTestServer(
  overrides: Partial<Config> = {},
  store?: Store,
): Promise<TestServer> {
  const database = await createTestDatabase();
  const config = testConfig(overrides);
  setLogLevel(config.logLevel);
  const server = new SmtpServer(config, store ?? database.store);
  const address = server.listen();
  return {
    port: address.port,
    config,
    server,
    database,
    close: async () => {
      await server.shutdown(0);
      await database.close();
    },
  };
}

/** Runs a test against a fresh server and database, closing both after. */
export async function withServer(
  overrides: Partial<Config>,
  test: (server: TestServer) => Promise<void>,
): Promise<void> {
  const server = await startTestServer(overrides);
  try {
    await test(server);
  } finally {
    await server.close();
  }
}

/** Sends EHLO, MAIL, one RCPT and DATA, asserting each reply code. */
export async function openTransaction(
  client: RawClient,
  recipient = "r@example.net",
): Promise<void> {
  assert.equal((await client.command("EHLO client.example")).code, 250);
  assert.equal((await client.command("MAIL FROM:<s@example.com>")).code, 250);
  assert.equal((await client.command(`RCPT TO:<${recipient}>`)).code, 250);
  assert.equal((await client.command("DATA")).code, 354);
}

/** Counts the rows of `messages` in the server's test database. */
export async function countMessages(server: TestServer): Promise<number> {
  const rows = await server.database.query(
    "SELECT COUNT(*) AS count FROM messages",
  );
  return Number((rows as { count: number }[])[0]!.count);
}
