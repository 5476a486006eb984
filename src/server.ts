/**
 * The accept loop: one connection and session per client, the connection
 * limit, and the graceful shutdown.
 */

import { ByteBudget } from "./byte_budget.ts";
import type { Config } from "./config.ts";
import { Connection, TcpTransport } from "./connection.ts";
import { describeError, log } from "./log.ts";
import { formatReply, REPLIES } from "./replies.ts";
import { Session } from "./session.ts";
import type { Store } from "./store.ts";

const encoder = new TextEncoder();

/** Serves SMTP on one listening socket. */
export class SmtpServer {
  readonly config: Config;
  readonly store: Store;
  #listener: Deno.Listener | null = null;
  #connections = new Map<Connection, Promise<void>>();
  #accepting: Promise<void> | null = null;
  #stopping = false;
  #messageBudget: ByteBudget;

  constructor(config: Config, store: Store) {
    this.config = config;
    this.store = store;
    this.#messageBudget = new ByteBudget(config.maxBufferedMessageBytes);
  }

  /** Opens the listening socket; the port is chosen by the OS when 0. */
  listen(): Deno.NetAddr {
    this.#listener = Deno.listen({
      hostname: this.config.smtpHost,
      port: this.config.smtpPort,
    });
    this.#accepting = this.#acceptLoop(this.#listener);
    return this.#listener.addr as Deno.NetAddr;
  }

  /** Message bytes that sessions hold in memory now. */
  get bufferedMessageBytes(): number {
    return this.#messageBudget.used;
  }

  /** The number of open sessions. */
  get connectionCount(): number {
    return this.#connections.size;
  }

  async #acceptLoop(listener: Deno.Listener): Promise<void> {
    while (!this.#stopping) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (this.#stopping || error instanceof Deno.errors.BadResource) return;
        // A client that reset its connection before it was accepted is not
        // an error of the server, and must not slow down the next accept.
        if (isClientReset(error)) {
          log("debug", "accept_reset", { error: describeError(error) });
          continue;
        }
        // For example out of file descriptors: wait a little rather than spin.
        log("error", "accept_failed", { error: describeError(error) });
        await new Promise((resolve) => setTimeout(resolve, 100));
        continue;
      }
      this.#handle(conn);
    }
  }

  #handle(conn: Deno.Conn): void {
    const remote = conn.remoteAddr as Deno.NetAddr;
    if (this.#connections.size >= this.config.maxConnections) {
      log("warn", "connection_rejected", {
        client: remote.hostname,
        reason: "max_connections",
        limit: this.config.maxConnections,
      });
      rejectConnection(conn);
      return;
    }

    try {
      (conn as Deno.TcpConn).setNoDelay?.(true);
    } catch {
      // Only a TCP socket has the option; replies still go out without it.
    }
    const session = new Session({
      config: this.config,
      store: this.store,
      clientAddress: remote.hostname,
      id: newSessionId(),
    });
    const connection = new Connection(new TcpTransport(conn), session, {
      idleTimeoutMs: this.config.idleTimeoutMs,
      maxMessageBytes: this.config.maxMessageBytes,
      messageBudget: this.#messageBudget,
    });
    log("info", "session_start", {
      session: session.id,
      client: remote.hostname,
      port: remote.port,
    });
    // A session counts until its socket closes, even if it still waits on
    // the store after a forced close at shutdown.
    connection.closed.then(() => this.#connections.delete(connection));
    const done = connection.run().finally(() => {
      this.#connections.delete(connection);
      log("info", "session_end", {
        session: session.id,
        client: remote.hostname,
        helo: session.heloName ?? undefined,
        messages: session.messagesStored,
        duration_ms: Date.now() - session.startedAt,
        reason: connection.endReason,
      });
    });
    this.#connections.set(connection, done);
  }

  /**
   * Stops accepting, lets sessions in DATA finish within `graceMs`, sends
   * 421 to the others, and resolves when every connection is closed.
   */
  async shutdown(graceMs: number): Promise<void> {
    this.#stopping = true;
    try {
      this.#listener?.close();
    } catch {
      // Already closed.
    }
    await this.#accepting;

    for (const connection of this.#connections.keys()) connection.shutdown();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const graceOver = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), graceMs);
    });
    const allClosed = Promise.all(this.#connections.values());
    const outcome = await Promise.race([allClosed, graceOver]);
    clearTimeout(timer);
    if (outcome === "timeout") {
      log("warn", "shutdown_grace_over", { sessions: this.#connections.size });
      // A session waiting on a stalled store is not waited for: closing the
      // store next fails its transaction, and MySQL rolls it back.
      const closed = [...this.#connections].map(([connection, done]) => {
        connection.forceClose();
        return Promise.race([done, connection.closed]);
      });
      await Promise.all(closed);
    }
  }
}

function isClientReset(error: unknown): boolean {
  return error instanceof Deno.errors.NotConnected ||
    error instanceof Deno.errors.ConnectionAborted ||
    error instanceof Deno.errors.ConnectionReset;
}

/** Sends 421 to a client over the connection limit and closes. */
function rejectConnection(conn: Deno.Conn): void {
  const text = formatReply(REPLIES.tooManyConnections, false);
  conn.write(encoder.encode(text))
    .catch(() => {
      // The client left first.
    })
    .finally(() => {
      try {
        conn.close();
      } catch {
        // Already closed.
      }
    });
}

function newSessionId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(6));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join(
    "",
  );
}
