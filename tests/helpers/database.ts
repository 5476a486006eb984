/**
 * A throwaway MySQL database for tests, on the server of `MYSQL_URL`
 * (default mysql://root@127.0.0.1:3306/):
 *
 * ```ts
 * const db = await createTestDatabase();
 * try {
 *   await db.query("INSERT INTO users (address, name) VALUES (?, ?)", [
 *     "alice@example.com",
 *     "Alice Liddell",
 *   ]);
 *   // ... run the code under test against db.store or db.url ...
 *   const rows = await db.query("SELECT sender FROM messages");
 * } finally {
 *   await db.close();
 * }
 * ```
 */

import mysql from "mysql2/promise";
import {
  type MysqlStore,
  openStore,
  type StoreOptions,
} from "../../src/store.ts";

/** A row as mysql2 returns it: column name to value. */
export type Row = Record<string, unknown>;

/** A database created for one test, with the schema applied. */
export interface TestDatabase {
  /** URL of the database, for `openStore` or the server's `MYSQL_URL`. */
  readonly url: string;
  /** Database name, `smtpstore_test_` and random hex digits. */
  readonly name: string;
  /** A store open on the database. */
  readonly store: MysqlStore;
  /**
   * Runs one statement on a connection of the helper's own, with `?`
   * placeholders filled from params. Returns the rows of a SELECT, and []
   * for statements without rows. DATETIME values come back as Date in
   * UTC, BLOBs as Buffer and BIGINTs as number.
   */
  query(sql: string, params?: unknown[]): Promise<Row[]>;
  /** Closes the store and the helper connection, and drops the database. */
  close(): Promise<void>;
}

const DEFAULT_SERVER_URL = "mysql://root@127.0.0.1:3306/";

/**
 * Creates a database with a unique name and opens a store on it, which
 * applies the schema.
 */
export async function createTestDatabase(
  options: StoreOptions = {},
): Promise<TestDatabase> {
  const name = "smtpstore_test_" +
    crypto.randomUUID().replaceAll("-", "").slice(0, 16);
  const url = new URL(Deno.env.get("MYSQL_URL") || DEFAULT_SERVER_URL);
  url.pathname = "/" + name;

  const store = await openStore(url.href, options);
  let connection: mysql.Connection;
  try {
    connection = await mysql.createConnection({
      host: url.hostname.replace(/^\[(.*)\]$/, "$1"),
      port: url.port === "" ? 3306 : Number(url.port),
      user: decodeURIComponent(url.username),
      password: decodeURIComponent(url.password),
      database: name,
      charset: "utf8mb4_unicode_ci",
      timezone: "Z",
    });
  } catch (error) {
    await store.close();
    throw error;
  }

  return {
    url: url.href,
    name,
    store,
    async query(sql, params) {
      const [result] = await connection.query(sql, params);
      return Array.isArray(result) ? result as Row[] : [];
    },
    async close() {
      await store.close();
      try {
        await connection.query(`DROP DATABASE IF EXISTS \`${name}\``);
      } finally {
        await connection.end();
      }
    },
  };
}
