/**
 * A TCP proxy in front of MySQL that cuts a connection at one statement,
 * for tests of a COMMIT lost on its way to MySQL or on its way back:
 *
 * ```ts
 * const proxy = StatementProxy.start(3306);
 * proxy.cutAt("COMMIT", "afterStatement");
 * // ... the next COMMIT runs in MySQL, and the client never sees its OK.
 * await proxy.close();
 * ```
 */

/**
 * Where the cut falls: before the statement reaches MySQL, or after
 * MySQL has run it and before its reply reaches the client.
 */
export type CutPoint = "beforeStatement" | "afterStatement";

interface Pair {
  readonly client: Deno.Conn;
  readonly server: Deno.Conn;
  /** Set once the armed statement went to MySQL: its reply is dropped. */
  dropReply: boolean;
  done: Promise<void>;
}

interface Trigger {
  readonly packet: Uint8Array;
  readonly point: CutPoint;
}

/** MySQL client/server protocol: the command byte of COM_QUERY. */
const COM_QUERY = 0x03;

/** Forwards 127.0.0.1:port to 127.0.0.1:targetPort until closed. */
export class StatementProxy {
  readonly port: number;
  readonly #targetPort: number;
  readonly #listener: Deno.Listener;
  readonly #pairs = new Set<Pair>();
  readonly #accepting: Promise<void>;
  #trigger: Trigger | undefined;
  #cuts = 0;

  private constructor(listener: Deno.Listener, targetPort: number) {
    this.port = (listener.addr as Deno.NetAddr).port;
    this.#targetPort = targetPort;
    this.#listener = listener;
    this.#accepting = this.#accept();
  }

  /** Starts a proxy on a free port of 127.0.0.1. */
  static start(targetPort = 3306): StatementProxy {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    return new StatementProxy(listener, targetPort);
  }

  /** The number of connections cut so far. */
  get cutCount(): number {
    return this.#cuts;
  }

  /**
   * Arms one cut at the next text-protocol statement whose SQL is exactly
   * `sql`, on whichever connection sends it first. The cut closes both
   * sides of that connection.
   *
   * NOTE: the statement is looked for within one read from the client, so
   * a packet split across two reads is missed. mysql2 writes a short
   * statement in one write, and `cutCount` shows whether the cut happened.
   */
  cutAt(sql: string, point: CutPoint): void {
    this.#trigger = { packet: queryPacket(sql), point };
  }

  /** Closes the listener and every connection. */
  async close(): Promise<void> {
    try {
      this.#listener.close();
    } catch {
      // Already closed.
    }
    await this.#accepting;
    const pairs = [...this.#pairs];
    for (const pair of pairs) closePair(pair);
    await Promise.all(pairs.map((pair) => pair.done));
  }

  async #accept(): Promise<void> {
    try {
      for await (const client of this.#listener) void this.#open(client);
    } catch {
      // The listener was closed.
    }
  }

  async #open(client: Deno.Conn): Promise<void> {
    let server: Deno.Conn;
    try {
      server = await Deno.connect({
        hostname: "127.0.0.1",
        port: this.#targetPort,
      });
    } catch {
      closeQuietly(client);
      return;
    }
    const pair: Pair = {
      client,
      server,
      dropReply: false,
      done: Promise.resolve(),
    };
    this.#pairs.add(pair);
    pair.done = Promise.all([
      this.#pumpToServer(pair),
      this.#pumpToClient(pair),
    ]).then(() => {
      this.#pairs.delete(pair);
    });
    await pair.done;
  }

  async #pumpToServer(pair: Pair): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const count = await pair.client.read(buffer);
        if (count === null) break;
        const chunk = buffer.subarray(0, count);
        const trigger = this.#trigger;
        if (trigger !== undefined && indexOf(chunk, trigger.packet) >= 0) {
          this.#trigger = undefined;
          if (trigger.point === "beforeStatement") {
            this.#cuts++;
            break;
          }
          pair.dropReply = true;
        }
        await writeAll(pair.server, chunk);
      }
    } catch {
      // One side was closed, by its peer or by a cut.
    }
    closePair(pair);
  }

  async #pumpToClient(pair: Pair): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const count = await pair.server.read(buffer);
        if (count === null) break;
        // MySQL replies to a statement only after running it, so the
        // first bytes back after the armed statement are its reply.
        if (pair.dropReply) {
          this.#cuts++;
          break;
        }
        await writeAll(pair.client, buffer.subarray(0, count));
      }
    } catch {
      // One side was closed, by its peer or by a cut.
    }
    closePair(pair);
  }
}

/** Builds a COM_QUERY packet with sequence id 0, as a client sends it. */
function queryPacket(sql: string): Uint8Array {
  const text = new TextEncoder().encode(sql);
  const length = text.length + 1;
  const packet = new Uint8Array(4 + length);
  // A 3-octet little-endian payload length, then the sequence id.
  packet[0] = length & 0xff;
  packet[1] = (length >> 8) & 0xff;
  packet[2] = (length >> 16) & 0xff;
  packet[3] = 0;
  packet[4] = COM_QUERY;
  packet.set(text, 5);
  return packet;
}

function indexOf(haystack: Uint8Array, needle: Uint8Array): number {
  const last = haystack.length - needle.length;
  outer: for (let start = 0; start <= last; start++) {
    for (let offset = 0; offset < needle.length; offset++) {
      if (haystack[start + offset] !== needle[offset]) continue outer;
    }
    return start;
  }
  return -1;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) {
    offset += await conn.write(bytes.subarray(offset));
  }
}

function closePair(pair: Pair): void {
  closeQuietly(pair.client);
  closeQuietly(pair.server);
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}
