/**
 * The MySQL store: pool, schema, the one-transaction insert of a message,
 * and the VRFY and EXPN look-ups. The only importer of mysql2.
 */

import { Buffer } from "node:buffer";
import mysql from "mysql2/promise";
import schema from "../sql/schema.sql" with { type: "text" };
import { log } from "./log.ts";
import { formatServer, type MysqlTarget, parseMysqlUrl } from "./mysql_url.ts";

/** A message ready to store, with the trace headers already in `raw`. */
export interface NewMessage {
  /** The reverse-path; "" for the null reverse-path. */
  readonly sender: string;
  /** The forward-paths, each once. */
  readonly recipients: readonly string[];
  readonly raw: Uint8Array;
  readonly subject: string;
  readonly date: Date | null;
  readonly body: string;
  readonly receivedAt: Date;
  readonly clientAddress: string;
  readonly helo: string;
}

/** A row of `users`. */
export interface User {
  readonly address: string;
  readonly name: string;
}

/**
 * A member of a mailing group. `name` is the user's full name when the
 * address is a user with a name, else null.
 */
export interface GroupMember {
  readonly address: string;
  readonly name: string | null;
}

/** MySQL cannot be reached or dropped the connection; the client gets 421. */
export class StoreUnavailableError extends Error {
  override name = "StoreUnavailableError";
}

/** The store operations a session uses. */
export interface Store {
  /** Inserts the message and its recipients in one transaction; resolves with the id after COMMIT. */
  insertMessage(message: NewMessage): Promise<string>;
  /** Users matching a VRFY argument; at most two, enough to tell one from many. */
  findUsers(query: string): Promise<User[]>;
  /** Members of the named group, empty when there is no such group. */
  expandGroup(name: string): Promise<GroupMember[]>;
}

/** Settings of `openStore`, each with a default. */
export interface StoreOptions {
  /** Maximum number of open pool connections; 10 by default. */
  readonly connectionLimit?: number;
  /**
   * Maximum wait in milliseconds for one statement, and for a free pool
   * connection; 30 000 by default.
   */
  readonly queryTimeoutMs?: number;
  /**
   * Maximum wait in milliseconds for a new connection's TCP connect and
   * handshake; 5 000 by default.
   */
  readonly connectTimeoutMs?: number;
}

interface Settings {
  readonly connectionLimit: number;
  readonly queryTimeoutMs: number;
  readonly connectTimeoutMs: number;
}

type Parameter = string | number | Date | Buffer | null;
type Connection = mysql.Connection;

/** The parts of mysql2's callback connection that the store uses. */
interface CoreConnection {
  on(event: "error", listener: (error: unknown) => void): void;
  readonly stream: {
    once(event: "close", listener: () => void): void;
    destroy(): void;
  };
}

const CHARSET = "utf8mb4";
const COLLATION = "utf8mb4_unicode_ci";

/**
 * Bytes that an INSERT or UPDATE packet needs besides its values. For the
 * nine-value INSERT, the header, command, statement id, flags, null bitmap,
 * parameter types and length prefixes add up to less than 150 bytes. The
 * rest is margin.
 */
const STATEMENT_OVERHEAD_BYTES = 1024;

/** Socket and mysql2 errors, and MySQL errors, that mean the server is out of reach. */
const UNAVAILABLE_CODES: ReadonlySet<string> = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "ETIMEDOUT",
  "EPIPE",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
  "PROTOCOL_CONNECTION_LOST",
  "PROTOCOL_SEQUENCE_TIMEOUT",
  "PROTOCOL_ENQUEUE_AFTER_FATAL_ERROR",
  "PROTOCOL_ENQUEUE_AFTER_QUIT",
  "ER_CON_COUNT_ERROR",
  "ER_TOO_MANY_USER_CONNECTIONS",
  "ER_SERVER_SHUTDOWN",
  "ER_NET_READ_ERROR",
  "ER_NET_READ_INTERRUPTED",
  "ER_NET_ERROR_ON_WRITE",
  "ER_NET_WRITE_INTERRUPTED",
  "ER_CLIENT_INTERACTION_TIMEOUT",
]);

/**
 * MariaDB's ER_CONNECTION_KILLED, sent before the server closes a killed
 * connection. mysql2 3.25 maps only MySQL's error numbers to names, so
 * this error has no code.
 */
const MARIADB_CONNECTION_KILLED = 1927;

/**
 * Codes of errors that a pooled connection shows when the server closed it
 * while it sat idle, for example after a MySQL restart. Nothing of the
 * statement reached the server, so it is safe to run it again on a new
 * connection.
 */
const CLOSED_CONNECTION_CODES: ReadonlySet<string> = new Set([
  "ECONNRESET",
  "EPIPE",
  "PROTOCOL_CONNECTION_LOST",
  "PROTOCOL_ENQUEUE_AFTER_FATAL_ERROR",
  "PROTOCOL_ENQUEUE_AFTER_QUIT",
  "ER_CLIENT_INTERACTION_TIMEOUT",
]);

const SET_SESSION = "SET time_zone = '+00:00'";

const INSERT_MESSAGE = `INSERT INTO messages
  (sender, subject, date, body, raw, size, received_at, client_address, helo)
  VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`;

// A recipient that differs from another only in accents (josé and jose)
// is equal under the column's collation but not under toLowerCase(). The
// ON DUPLICATE KEY clause keeps the first instead of failing the message.
const INSERT_RECIPIENTS = `INSERT INTO message_recipients
  (message_id, address) VALUES `;
const ON_DUPLICATE_RECIPIENT =
  " ON DUPLICATE KEY UPDATE message_id = message_id";

// VRFY and EXPN compare without regard to case and nothing else: the
// columns' utf8mb4_unicode_ci collation would also ignore accents (José
// matches Jose) and control characters, so both sides are lower-cased and
// compared as binary. ESCAPE names ! rather than a backslash, because how
// a backslash is written in an SQL literal depends on NO_BACKSLASH_ESCAPES.
const CASELESS = "COLLATE utf8mb4_bin";
const FIND_USERS = `SELECT address, name FROM users
  WHERE LOWER(address) ${CASELESS} = LOWER(?) ${CASELESS}
    OR LOWER(address) ${CASELESS} LIKE LOWER(?) ${CASELESS} ESCAPE '!'
    OR LOWER(name) ${CASELESS} = LOWER(?) ${CASELESS}
  ORDER BY address LIMIT 2`;

const EXPAND_GROUP = `SELECT m.address AS address, u.name AS name
  FROM mail_groups g
  JOIN group_members m ON m.group_id = g.id
  LEFT JOIN users u
    ON LOWER(u.address) ${CASELESS} = LOWER(m.address) ${CASELESS}
  WHERE LOWER(g.name) ${CASELESS} = LOWER(?) ${CASELESS}
  ORDER BY m.address`;

/**
 * Opens the store at a `mysql://user:password@host:port/database` URL:
 * creates the database when it is missing, applies the schema and reads
 * `max_allowed_packet`. Throws an Error whose message names the server,
 * the database and the cause.
 */
export async function openStore(
  url: string,
  options: StoreOptions = {},
): Promise<MysqlStore> {
  return await MysqlStore.open(url, options);
}

function readSettings(options: StoreOptions): Settings {
  return {
    connectionLimit: options.connectionLimit ?? 10,
    queryTimeoutMs: options.queryTimeoutMs ?? 30_000,
    connectTimeoutMs: options.connectTimeoutMs ?? 5_000,
  };
}

/**
 * Runs CREATE DATABASE IF NOT EXISTS on a connection without a database.
 * A user without the CREATE privilege gets an access error even when the
 * database exists, so that error is left for the pool's connect to report.
 */
async function createDatabase(
  target: MysqlTarget,
  settings: Settings,
): Promise<void> {
  const connection = await mysql.createConnection({
    ...connectionOptions(target, settings),
    database: undefined,
  });
  // Errors reach the caller through the failed statement.
  connection.on("error", () => {});
  try {
    await runStatement(
      connection,
      settings.queryTimeoutMs,
      `CREATE DATABASE IF NOT EXISTS \`${target.database}\`` +
        ` CHARACTER SET ${CHARSET} COLLATE ${COLLATION}`,
    );
  } catch (error) {
    if (errorCode(error) !== "ER_DBACCESS_DENIED_ERROR") throw error;
  } finally {
    await closeConnection(connection, settings.queryTimeoutMs);
  }
}

function connectionOptions(
  target: MysqlTarget,
  settings: Settings,
): mysql.ConnectionOptions {
  return {
    host: target.host,
    port: target.port,
    user: target.user,
    password: target.password,
    database: target.database,
    charset: COLLATION,
    connectTimeout: settings.connectTimeoutMs,
    enableKeepAlive: true,
    // DATETIME values are sent and read as UTC.
    timezone: "Z",
    supportBigNumbers: true,
    bigNumberStrings: true,
  };
}

function createPool(target: MysqlTarget, settings: Settings): mysql.Pool {
  return mysql.createPool({
    ...connectionOptions(target, settings),
    connectionLimit: settings.connectionLimit,
    waitForConnections: true,
    queueLimit: 0,
  });
}

/** Ends a connection politely, or destroys it when the server is silent. */
async function closeConnection(
  connection: mysql.Connection,
  timeoutMs: number,
): Promise<void> {
  try {
    await withTimeout(connection.end(), timeoutMs, "closing the connection");
  } catch {
    destroyConnection(connection);
  }
}

/**
 * The MySQL store. Created by `openStore`; call `close()` when done.
 *
 * Every statement has a timeout, and a connection whose statement failed
 * for lack of the server is destroyed, so the pool opens a new one on the
 * next call. That is how the store recovers after MySQL restarts.
 */
export class MysqlStore implements Store {
  readonly #pool: mysql.Pool;
  readonly #settings: Settings;
  /** Connections that have run SET_SESSION, which marks them as reused. */
  readonly #configured = new WeakSet<object>();
  /** Each open connection of the pool, with a promise of its socket close. */
  readonly #sockets = new Map<CoreConnection, Promise<void>>();
  #maxAllowedPacket = 0;
  #available = true;
  #closing: Promise<void> | undefined;

  private constructor(pool: mysql.Pool, settings: Settings) {
    this.#pool = pool;
    this.#settings = settings;
    pool.on("connection", (connection) => {
      this.#watch(connection as unknown as CoreConnection);
    });
  }

  #watch(connection: CoreConnection): void {
    // A failed command reports its error to the caller. This listener
    // keeps an error that mysql2 emits on the connection afterwards, with
    // no command waiting, from being thrown as an unhandled 'error' event.
    connection.on("error", (error) => {
      log("debug", "store_connection_error", { error: describeCause(error) });
    });
    const closed = new Promise<void>((resolve) => {
      connection.stream.once("close", () => {
        this.#sockets.delete(connection);
        resolve();
      });
    });
    this.#sockets.set(connection, closed);
  }

  /** Opens a store, as `openStore` describes. */
  static async open(
    url: string,
    options: StoreOptions = {},
  ): Promise<MysqlStore> {
    const target = parseMysqlUrl(url);
    const settings = readSettings(options);
    try {
      await createDatabase(target, settings);
      const store = new MysqlStore(createPool(target, settings), settings);
      try {
        await store.#applySchema();
      } catch (error) {
        await store.close();
        throw error;
      }
      return store;
    } catch (error) {
      const server = formatServer(target);
      throw new Error(
        `cannot open MySQL database ${target.database} at ${server}: ` +
          describeCause(error),
        { cause: error },
      );
    }
  }

  /** The server's `max_allowed_packet` in bytes, read at open. */
  get maxAllowedPacket(): number {
    return this.#maxAllowedPacket;
  }

  /** The largest `raw` that `insertMessage` accepts, in bytes. */
  get maxRawBytes(): number {
    return this.#maxAllowedPacket - STATEMENT_OVERHEAD_BYTES;
  }

  async #applySchema(): Promise<void> {
    const [connection, rows] = await this.#start(
      "SELECT @@max_allowed_packet AS packet",
    );
    try {
      for (const statement of splitStatements(schema)) {
        await this.#run(connection, statement);
      }
      connection.release();
    } catch (error) {
      destroyConnection(connection);
      throw error;
    }
    const packet = (rows as mysql.RowDataPacket[])[0]?.packet;
    this.#maxAllowedPacket = Number(packet);
  }

  /**
   * Inserts the message and its recipients in one transaction and resolves
   * with the new id as a decimal string after COMMIT. Throws
   * StoreUnavailableError when MySQL is out of reach, and an Error when
   * `raw` is larger than `maxRawBytes`.
   */
  async insertMessage(message: NewMessage): Promise<string> {
    const row = prepareRow(message, this.maxRawBytes);
    const recipients = uniqueAddresses(message.recipients);
    return await this.#track(async () => {
      const [connection] = await this.#start("START TRANSACTION");
      let id: string | undefined;
      try {
        id = await this.#insertRows(connection, row, recipients);
        await this.#run(connection, "COMMIT");
        connection.release();
        return id;
      } catch (error) {
        await this.#abort(connection, error);
        if (id !== undefined && isUnavailableError(error)) {
          if (await this.#wasCommitted(id)) return id;
        }
        throw error;
      }
    });
  }

  /**
   * Looks, on another connection, for the row of a transaction whose COMMIT
   * got no reply. The COMMIT may have run before the connection dropped,
   * and a 421 for a stored message makes the client send it twice.
   */
  async #wasCommitted(id: string): Promise<boolean> {
    // NOTE: a COMMIT still in flight when this runs is not seen, and
    // neither is one when MySQL stays out of reach, so a duplicate can
    // still follow a lost acknowledgement in those cases.
    try {
      const [connection, rows] = await this.#start(
        "SELECT id FROM messages WHERE id = ?",
        [id],
      );
      connection.release();
      const found = (rows as mysql.RowDataPacket[]).length > 0;
      log("warn", "commit_unacknowledged", { id, stored: found });
      return found;
    } catch {
      return false;
    }
  }

  async #insertRows(
    connection: mysql.PoolConnection,
    row: MessageRow,
    recipients: string[],
  ): Promise<string> {
    const { split } = row;
    const header = await this.#run(connection, INSERT_MESSAGE, [
      row.sender,
      row.subject,
      row.date,
      split ? "" : row.body,
      split ? Buffer.alloc(0) : row.raw,
      row.raw.length,
      row.receivedAt,
      row.clientAddress,
      row.helo,
    ]) as mysql.ResultSetHeader;
    const id = String(header.insertId);

    // Each value gets a packet of its own when the row would not fit in
    // one.
    if (split) {
      const setRaw = "UPDATE messages SET raw = ? WHERE id = ?";
      await this.#run(connection, setRaw, [row.raw, id]);
      const setBody = "UPDATE messages SET body = ? WHERE id = ?";
      await this.#run(connection, setBody, [row.body, id]);
    }

    if (recipients.length > 0) {
      const values = recipients.map(() => "(?, ?)").join(", ");
      const sql = INSERT_RECIPIENTS + values + ON_DUPLICATE_RECIPIENT;
      await this.#run(
        connection,
        sql,
        recipients.flatMap((address) => [id, address]),
      );
    }
    return id;
  }

  /**
   * Rolls back the transaction and releases the connection, or destroys
   * the connection when it is unusable.
   */
  async #abort(
    connection: mysql.PoolConnection,
    error: unknown,
  ): Promise<void> {
    // The server rolls back the transaction of a connection that closes.
    if (isUnavailableError(error)) {
      destroyConnection(connection);
      return;
    }
    try {
      await this.#run(connection, "ROLLBACK");
      connection.release();
    } catch {
      destroyConnection(connection);
    }
  }

  /**
   * Finds the users that a VRFY argument names, comparing without regard
   * to case: the full address, the local part of an address, or the full
   * name. A surrounding `<...>` or `"..."` is removed first. Returns at
   * most two users, ordered by address.
   */
  async findUsers(query: string): Promise<User[]> {
    const term = stripQuotes(query.trim());
    if (term === "") return [];
    const localPart = escapeLike(term) + "@%";
    const rows = await this.#select(FIND_USERS, [term, localPart, term]);
    return rows.map((row) => ({
      address: String(row.address),
      name: String(row.name),
    }));
  }

  /**
   * Lists the members of the group with this name, compared without regard
   * to case, ordered by address. Returns [] when there is no such group.
   */
  async expandGroup(name: string): Promise<GroupMember[]> {
    const term = name.trim();
    if (term === "") return [];
    const rows = await this.#select(EXPAND_GROUP, [term]);
    return rows.map((row) => ({
      address: String(row.address),
      name: typeof row.name === "string" && row.name !== "" ? row.name : null,
    }));
  }

  /**
   * Ends the pool: sends QUIT on each connection and waits for the server
   * to close it. Sockets still open after the connect timeout, because the
   * server is silent or a statement is stuck, are destroyed. Call it after
   * the sessions have finished, because a transaction still open then fails
   * with StoreUnavailableError. Later calls return the same promise.
   */
  close(): Promise<void> {
    this.#closing ??= this.#end();
    return this.#closing;
  }

  async #end(): Promise<void> {
    const timeoutMs = this.#settings.connectTimeoutMs;
    try {
      await withTimeout(this.#pool.end(), timeoutMs, "closing the pool");
      const sockets = Promise.all(this.#sockets.values());
      await withTimeout(sockets, timeoutMs, "closing the pool");
    } catch (error) {
      log("warn", "store_close_failed", { error: describeCause(error) });
    }
    for (const connection of this.#sockets.keys()) {
      connection.stream.destroy();
    }
    this.#sockets.clear();
  }

  async #select(
    sql: string,
    parameters: Parameter[],
  ): Promise<mysql.RowDataPacket[]> {
    return await this.#track(async () => {
      const [connection, rows] = await this.#start(sql, parameters);
      connection.release();
      return rows as mysql.RowDataPacket[];
    });
  }

  /**
   * Runs work and turns an error that means MySQL is out of reach into
   * StoreUnavailableError. Logs each change between available and
   * unavailable once.
   */
  async #track<T>(work: () => Promise<T>): Promise<T> {
    if (this.#closing !== undefined) {
      throw new StoreUnavailableError("the MySQL store is closed");
    }
    let result: T;
    try {
      result = await work();
    } catch (error) {
      // Statements cut short by close() fail in many ways, and all of them
      // mean that the store is closed.
      if (this.#closing !== undefined) {
        throw new StoreUnavailableError("the MySQL store is closed", {
          cause: error,
        });
      }
      if (!isUnavailableError(error)) throw error;
      const cause = describeCause(error);
      if (this.#available) {
        this.#available = false;
        log("warn", "store_unavailable", { error: cause });
      }
      throw new StoreUnavailableError(`MySQL is unavailable: ${cause}`, {
        cause: error,
      });
    }
    if (!this.#available) {
      this.#available = true;
      log("info", "store_available");
    }
    return result;
  }

  /**
   * Takes a pool connection and runs a first statement on it. A pooled
   * connection that the server closed while it was idle fails at once, so
   * the statement is run again on another connection: nothing of it
   * reached the server.
   */
  async #start(
    sql: string,
    parameters?: Parameter[],
  ): Promise<[mysql.PoolConnection, unknown]> {
    for (let attempt = 0;; attempt++) {
      const connection = await this.#acquire();
      const reused = this.#configured.has(connection.connection);
      try {
        if (!reused) {
          await this.#run(connection, SET_SESSION);
          this.#configured.add(connection.connection);
        }
        const result = await this.#run(connection, sql, parameters);
        return [connection, result];
      } catch (error) {
        if (isUnavailableError(error)) destroyConnection(connection);
        else connection.release();
        const retry = reused && isClosedConnectionError(error) &&
          attempt < this.#settings.connectionLimit &&
          this.#closing === undefined;
        if (!retry) throw error;
        log("warn", "store_retry", {
          reason: "pooled connection was closed",
          error: describeCause(error),
        });
      }
    }
  }

  async #acquire(): Promise<mysql.PoolConnection> {
    const pending = this.#pool.getConnection();
    try {
      return await withTimeout(
        pending,
        this.#settings.queryTimeoutMs,
        "waiting for a pool connection",
      );
    } catch (error) {
      // A connection that arrives after the timeout goes back to the pool.
      pending.then((connection) => connection.release(), () => {});
      throw error;
    }
  }

  async #run(
    connection: Connection,
    sql: string,
    parameters?: Parameter[],
  ): Promise<unknown> {
    return await runStatement(
      connection,
      this.#settings.queryTimeoutMs,
      sql,
      parameters,
    );
  }
}

/**
 * Runs one statement: parameterised ones as prepared statements (binary
 * protocol), others as text. Destroys the connection when the statement
 * has not finished after timeoutMs, because its state is then unknown.
 */
async function runStatement(
  connection: Connection,
  timeoutMs: number,
  sql: string,
  parameters?: Parameter[],
): Promise<unknown> {
  const pending = parameters === undefined
    ? connection.query(sql)
    : connection.execute(sql, parameters);
  try {
    const [result] = await withTimeout(pending, timeoutMs, "statement");
    return result;
  } catch (error) {
    if (errorCode(error) === "ETIMEDOUT") destroyConnection(connection);
    throw error;
  }
}

/**
 * Rejects with an ETIMEDOUT error when the promise has not settled after
 * timeoutMs. The promise's own late rejection is then ignored.
 */
async function withTimeout<T>(
  promise: Promise<T>,
  timeoutMs: number,
  activity: string,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const error = new Error(`${activity} timed out after ${timeoutMs} ms`);
      reject(Object.assign(error, { code: "ETIMEDOUT" }));
    }, timeoutMs);
  });
  promise.catch(() => {});
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Closes a connection's socket at once and removes it from its pool.
 * mysql2's destroy() only half-closes the socket, which a silent peer
 * keeps open.
 */
function destroyConnection(connection: Connection): void {
  connection.destroy();
  const core = (connection as unknown as {
    connection?: { stream?: { destroy?: () => void } };
  }).connection;
  core?.stream?.destroy?.();
}

function errorCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

function isUnavailableError(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const { fatal, errno } = error as { fatal?: unknown; errno?: unknown };
  if (fatal === true || errno === MARIADB_CONNECTION_KILLED) return true;
  const code = errorCode(error);
  return code !== undefined && UNAVAILABLE_CODES.has(code);
}

function isClosedConnectionError(error: unknown): boolean {
  const errno = (error as { errno?: unknown } | null)?.errno;
  if (errno === MARIADB_CONNECTION_KILLED) return true;
  const code = errorCode(error);
  if (code !== undefined) return CLOSED_CONNECTION_CODES.has(code);
  // mysql2 fails a command on a connection it has already closed with a
  // fatal error that has no code.
  return (error as { fatal?: unknown } | null)?.fatal === true;
}

/** Formats an error as its message, led by its code when that is not in it. */
function describeCause(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  let message = error.message;
  // Connecting to a name with several addresses fails with an
  // AggregateError whose own message is empty.
  if (message === "" && error instanceof AggregateError) {
    message = error.errors.map(describeCause).join("; ");
  }
  const code = errorCode(error);
  if (code === undefined || message.includes(code)) return message;
  return message === "" ? code : `${code}: ${message}`;
}

/** The column values of one message, checked and sized for the packet. */
interface MessageRow {
  readonly sender: string;
  readonly subject: string;
  readonly date: Date | null;
  readonly body: string;
  readonly raw: Buffer;
  readonly receivedAt: Date;
  readonly clientAddress: string;
  readonly helo: string;
  /** Whether raw and body go in UPDATEs of their own after the INSERT. */
  readonly split: boolean;
}

function prepareRow(message: NewMessage, maxRawBytes: number): MessageRow {
  const raw = Buffer.from(
    message.raw.buffer,
    message.raw.byteOffset,
    message.raw.byteLength,
  );
  if (raw.length > maxRawBytes) {
    throw new Error(
      `message of ${raw.length} bytes is larger than the ${maxRawBytes} ` +
        "that MySQL's max_allowed_packet allows; raise max_allowed_packet " +
        "or lower MAX_MESSAGE_BYTES",
    );
  }

  const fixedBytes = byteLength(message.sender) +
    byteLength(message.clientAddress) + byteLength(message.helo);
  const subject = truncateField(
    "subject",
    message.subject,
    maxRawBytes - fixedBytes,
  );
  const body = truncateField("body", message.body, maxRawBytes);
  const total = fixedBytes + byteLength(subject) + byteLength(body) +
    raw.length;

  return {
    sender: message.sender,
    subject,
    date: storableDate(message.date),
    body,
    raw,
    receivedAt: message.receivedAt,
    clientAddress: message.clientAddress,
    helo: message.helo,
    split: total > maxRawBytes,
  };
}

/**
 * Cuts a text to maxBytes of UTF-8 at a character boundary. Only a subject
 * or body decoded to more UTF-8 bytes than the raw message has can need
 * it, for example Latin-1 text that doubles in size.
 */
function truncateField(field: string, text: string, maxBytes: number): string {
  // NOTE: MySQL takes no value, and builds no CONCAT result, larger than
  // max_allowed_packet. A body or subject whose UTF-8 is larger is cut, and
  // raw stays whole. Text in a one-byte charset can grow threefold.
  const bytes = byteLength(text);
  if (bytes <= maxBytes) return text;
  const encoded = Buffer.from(text, "utf8");
  let end = maxBytes;
  // Back off continuation bytes (10xxxxxx) to the start of a character.
  while (end > 0 && ((encoded[end] ?? 0) & 0xc0) === 0x80) end--;
  log("warn", "field_truncated", { field, bytes, kept: end });
  return encoded.subarray(0, end).toString("utf8");
}

function byteLength(text: string): number {
  return Buffer.byteLength(text, "utf8");
}

/**
 * Returns the date when DATETIME can hold it (years 1000 to 9999), else
 * null, so an odd Date header cannot make the insert fail.
 */
function storableDate(date: Date | null): Date | null {
  if (date === null || Number.isNaN(date.getTime())) return null;
  const year = date.getUTCFullYear();
  return year >= 1000 && year <= 9999 ? date : null;
}

/** Removes repeated addresses, compared without regard to case. */
function uniqueAddresses(addresses: readonly string[]): string[] {
  const seen = new Set<string>();
  const unique: string[] = [];
  for (const address of addresses) {
    const key = address.toLowerCase();
    if (seen.has(key)) continue;
    seen.add(key);
    unique.push(address);
  }
  return unique;
}

function stripQuotes(text: string): string {
  const quoted = /^<(.*)>$/s.exec(text) ?? /^"(.*)"$/s.exec(text);
  return quoted?.[1]?.trim() ?? text;
}

/** Escapes LIKE's wildcards, and its escape character `!`. */
function escapeLike(text: string): string {
  return text.replace(/[!%_]/g, (character) => "!" + character);
}

/**
 * Splits the schema into statements at each `;` that ends a line, after
 * removing `--` comment lines.
 */
export function splitStatements(sql: string): string[] {
  const code = sql
    .split("\n")
    .filter((line) => !line.trimStart().startsWith("--"))
    .join("\n");
  return code
    .split(/;\s*$/m)
    .map((statement) => statement.trim())
    .filter((statement) => statement !== "");
}
