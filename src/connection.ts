/**
 * The I/O of one session: reads command lines and mail data from the
 * transport, feeds them to the session, and writes its replies.
 */

import type { ByteBudget } from "./byte_budget.ts";
import { type ByteSource, LineReader } from "./line_reader.ts";
import { describeError, log } from "./log.ts";
import { REPLIES, type Reply } from "./replies.ts";
import type { Session, Step } from "./session.ts";

/**
 * A byte stream to and from the client. A chunk from `read()` is valid only
 * until the next call. STARTTLS will swap a plain transport for a TLS one.
 */
export interface Transport extends ByteSource {
  write(bytes: Uint8Array): Promise<void>;
  close(): void;
}

/** A transport over a Deno TCP connection. */
export class TcpTransport implements Transport {
  #conn: Deno.Conn;
  #buffer = new Uint8Array(16 * 1024);
  #closed = false;

  constructor(conn: Deno.Conn) {
    this.#conn = conn;
  }

  async read(): Promise<Uint8Array | null> {
    if (this.#closed) return null;
    try {
      const count = await this.#conn.read(this.#buffer);
      return count === null ? null : this.#buffer.subarray(0, count);
    } catch (error) {
      // A reset or a close from our side ends the stream like an EOF.
      if (this.#closed || isDisconnect(error)) return null;
      throw error;
    }
  }

  async write(bytes: Uint8Array): Promise<void> {
    let offset = 0;
    while (offset < bytes.length) {
      offset += await this.#conn.write(bytes.subarray(offset));
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // Already closed by the peer.
    }
  }
}

function isDisconnect(error: unknown): boolean {
  return error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.BrokenPipe ||
    error instanceof Deno.errors.BadResource ||
    error instanceof Deno.errors.Interrupted ||
    error instanceof Deno.errors.NotConnected ||
    error instanceof Deno.errors.ConnectionAborted;
}

export interface ConnectionOptions {
  readonly idleTimeoutMs: number;
  readonly maxMessageBytes: number;
  /** Message bytes all sessions together may hold in memory. */
  readonly messageBudget?: ByteBudget;
}

/**
 * The activity of a connection: waiting for a command, receiving mail
 * data, writing replies, or working (the idle timer does not run while it
 * works, since the store has its own statement timeout).
 */
type Phase = "command" | "data" | "write" | "busy" | "closed";

const encoder = new TextEncoder();

/** The reason a session ended, for its `session_end` log line. */
export type EndReason =
  | "quit"
  | "client_closed"
  | "idle_timeout"
  | "shutdown"
  | "shutdown_forced"
  | "store_unavailable"
  | "insufficient_storage"
  | "internal_error";

/** Runs one session over a transport until either side closes. */
export class Connection {
  readonly session: Session;
  #transport: Transport;
  #reader: LineReader;
  #options: ConnectionOptions;
  #phase: Phase = "busy";
  #pending = "";
  #lastProgress = Date.now();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #shuttingDown = false;
  #closed = Promise.withResolvers<void>();
  #endReason: EndReason | undefined;

  constructor(
    transport: Transport,
    session: Session,
    options: ConnectionOptions,
  ) {
    this.#transport = transport;
    this.#reader = new LineReader(transport);
    this.session = session;
    this.#options = options;
  }

  /** Serves the session; resolves when the connection is closed. */
  async run(): Promise<void> {
    this.#armTimer(this.#options.idleTimeoutMs);
    try {
      await this.#send(this.session.greeting().reply);
      await this.#serve();
    } catch (error) {
      if (!isDisconnect(error)) {
        this.#endWith("internal_error");
        log("error", "connection_failed", {
          session: this.session.id,
          error: describeError(error),
        });
      }
    } finally {
      this.#close();
    }
  }

  /**
   * Starts a graceful close: a session waiting for a command gets 421 now;
   * one in DATA or in the store gets it after its reply.
   */
  shutdown(): void {
    this.#shuttingDown = true;
    if (this.#phase !== "command") return;
    this.#endWith("shutdown");
    this.#closeWith(REPLIES.shuttingDown);
  }

  /** Sends 421 and closes at once, as when the shutdown grace period is over. */
  forceClose(): void {
    if (this.#phase === "closed") return;
    this.#endWith("shutdown_forced");
    this.#closeWith(REPLIES.shuttingDown);
  }

  /** The reason the session ended; "client_closed" unless another applies. */
  get endReason(): EndReason {
    return this.#endReason ?? "client_closed";
  }

  /** Records the first reason the session ends for. */
  #endWith(reason: EndReason): void {
    this.#endReason ??= reason;
  }

  /**
   * Resolves when the socket is closed, which can be before `run()` ends:
   * a session may still wait on the store after a forced close.
   */
  get closed(): Promise<void> {
    return this.#closed.promise;
  }

  async #serve(): Promise<void> {
    while (this.#phase !== "closed") {
      // A shutdown that came while replies were being written gets its 421
      // before the next command is awaited.
      if (this.#shuttingDown) {
        this.#endWith("shutdown");
        this.#queue(REPLIES.shuttingDown);
        return await this.#flush();
      }
      this.#enterPhase("command");
      const line = await this.#reader.readCommandLine();
      if (this.#isClosed()) return;
      // A client that half-closes after a pipelined group still gets the
      // replies that waited for the rest of the group.
      if (line === null) return await this.#flush();
      this.#enterPhase("busy");

      let step = await this.session.handleCommand(line);
      if (step.next === "data") {
        this.#queue(step.reply);
        await this.#flush();
        const received = await this.#receiveData();
        if (received === null) return;
        step = received;
      }

      this.#queue(step.reply);
      if (step.next === "close") {
        this.#endWith(closeReason(step.reply));
        return await this.#flush();
      }
      // RFC 2920: replies to a pipelined group may wait until the group has
      // been read, so they leave in one write.
      if (!this.#reader.hasBufferedLine) await this.#flush();
    }
  }

  /** Reports whether a timer or shutdown closed the connection meanwhile. */
  #isClosed(): boolean {
    return this.#phase === "closed";
  }

  /**
   * Reads the mail data after a 354 and returns the session's reply to it,
   * or null when the connection closed first. The message's bytes count
   * against the shared budget until the reply is chosen.
   */
  async #receiveData(): Promise<Step | null> {
    this.#enterPhase("data");
    // NOTE: the budget has no share per client address, so a few slow
    // senders of large messages can hold it for an idle timeout each.
    const reservation = this.#options.messageBudget?.open();
    try {
      const data = await this.#reader.readData({
        maxBytes: this.#options.maxMessageBytes,
        reservation,
      });
      if (data === null || this.#isClosed()) return null;
      this.#enterPhase("busy");
      return await this.session.receiveData(data);
    } finally {
      reservation?.release();
    }
  }

  #enterPhase(phase: Phase): void {
    if (this.#phase === "closed") return;
    this.#phase = phase;
    if (phase !== "busy") this.#lastProgress = Date.now();
  }

  #queue(reply: Reply): void {
    this.#pending += this.session.format(reply);
  }

  async #flush(): Promise<void> {
    if (this.#pending === "") return;
    const text = this.#pending;
    this.#pending = "";
    const previous = this.#phase;
    this.#enterPhase("write");
    await this.#transport.write(encoder.encode(text));
    if (this.#phase === "write") this.#phase = previous;
  }

  async #send(reply: Reply): Promise<void> {
    this.#queue(reply);
    await this.#flush();
  }

  /**
   * One timer per connection. It closes a session that has waited for a
   * command, or spent on the mail data of one message, longer than the idle
   * timeout. Bytes that trickle in do not reset it, so a slow client cannot
   * hold a session, or the memory of its message, for longer.
   */
  #armTimer(delay: number): void {
    this.#timer = setTimeout(() => this.#checkIdle(), delay);
  }

  #checkIdle(): void {
    if (this.#phase === "closed") return;
    const idle = Date.now() - this.#lastProgress;
    const timeout = this.#options.idleTimeoutMs;
    if (this.#phase === "busy" || idle < timeout) {
      this.#armTimer(this.#phase === "busy" ? timeout : timeout - idle);
      return;
    }
    log("warn", "idle_timeout", {
      session: this.session.id,
      phase: this.#phase,
      seconds: Math.round(idle / 1000),
    });
    this.#endWith("idle_timeout");
    // A client that does not read its replies cannot be sent a 421 either.
    if (this.#phase === "write") return this.#close();
    const data = this.#phase === "data";
    this.#closeWith(data ? REPLIES.dataTimeout : REPLIES.idleTimeout);
  }

  /**
   * Writes a last reply while the loop waits on a read or the store, then
   * closes. A client that does not read gets at most a second for it.
   */
  #closeWith(reply: Reply): void {
    const text = this.#pending + this.session.format(reply);
    this.#pending = "";
    this.#phase = "closed";
    const fallback = setTimeout(() => this.#close(), 1000);
    this.#transport.write(encoder.encode(text))
      .catch(() => {
        // The client has disconnected, so the reply cannot be delivered.
      })
      .finally(() => {
        clearTimeout(fallback);
        this.#close();
      });
  }

  #close(): void {
    this.#phase = "closed";
    clearTimeout(this.#timer);
    this.#transport.close();
    this.#closed.resolve();
  }
}

/** Maps a reply after which the session closes to its end reason. */
function closeReason(reply: Reply): EndReason {
  if (reply === REPLIES.storeUnavailable) return "store_unavailable";
  if (reply === REPLIES.insufficientStorage) return "insufficient_storage";
  if (reply === REPLIES.internalError) return "internal_error";
  return "quit";
}
