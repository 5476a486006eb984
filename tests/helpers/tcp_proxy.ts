/**
 * A TCP proxy on 127.0.0.1 for failure tests: it forwards each connection
 * to a target port and can cut every connection, refuse new ones, or go
 * silent, the way a restarting or unreachable MySQL would look.
 */

/** The modes of a proxy: forwarding, refusing, or silently dropping. */
export type ProxyState = "forwarding" | "cut" | "stalled";

interface Pair {
  readonly client: Deno.Conn;
  readonly server: Deno.Conn | undefined;
  readonly done: Promise<void>;
}

/** Forwards 127.0.0.1:port to 127.0.0.1:targetPort until closed. */
export class TcpProxy {
  readonly port: number;
  readonly #targetPort: number;
  readonly #pairs = new Set<Pair>();
  #listener: Deno.Listener | undefined;
  #accepting: Promise<void> = Promise.resolve();
  #state: ProxyState = "forwarding";

  private constructor(listener: Deno.Listener, targetPort: number) {
    this.port = (listener.addr as Deno.NetAddr).port;
    this.#targetPort = targetPort;
    this.#listen(listener);
  }

  /** Starts a proxy on a free port of 127.0.0.1. */
  static start(targetPort = 3306): TcpProxy {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    return new TcpProxy(listener, targetPort);
  }

  get state(): ProxyState {
    return this.#state;
  }

  /** Number of client connections open through the proxy. */
  get connectionCount(): number {
    return this.#pairs.size;
  }

  /**
   * Closes every open connection and the listening socket, so new
   * connections get ECONNREFUSED.
   */
  async cut(): Promise<void> {
    this.#state = "cut";
    this.#listener?.close();
    this.#listener = undefined;
    await this.#closeAll();
  }

  /**
   * Keeps connections open but drops every byte in both directions, and
   * accepts new connections without forwarding them: a silent network.
   */
  stall(): void {
    this.#state = "stalled";
  }

  /** Forwards again, listening on the same port after a cut. */
  restore(): void {
    if (this.#listener === undefined) {
      this.#listen(Deno.listen({ hostname: "127.0.0.1", port: this.port }));
    }
    this.#state = "forwarding";
  }

  /** Closes the listener and every connection. */
  async close(): Promise<void> {
    await this.cut();
  }

  #listen(listener: Deno.Listener): void {
    this.#listener = listener;
    this.#accepting = this.#accept(listener);
  }

  async #accept(listener: Deno.Listener): Promise<void> {
    try {
      for await (const client of listener) {
        void this.#open(client);
      }
    } catch {
      // The listener was closed by cut().
    }
  }

  async #open(client: Deno.Conn): Promise<void> {
    let server: Deno.Conn | undefined;
    if (this.#state === "forwarding") {
      try {
        server = await Deno.connect({
          hostname: "127.0.0.1",
          port: this.#targetPort,
        });
      } catch {
        client.close();
        return;
      }
    }
    // cut() may have run while the target was connecting.
    if (this.#state === "cut") {
      closeQuietly(client);
      if (server !== undefined) closeQuietly(server);
      return;
    }
    let resolveDone = () => {};
    const done = new Promise<void>((resolve) => resolveDone = resolve);
    const pair: Pair = { client, server, done };
    this.#pairs.add(pair);
    await Promise.all([
      this.#pump(client, server),
      server === undefined ? undefined : this.#pump(server, client),
    ]);
    this.#pairs.delete(pair);
    resolveDone();
  }

  /**
   * Copies bytes from one side to the other, or drops them while stalled
   * or when there is no other side. Closes both sides at end of stream.
   */
  async #pump(from: Deno.Conn, to: Deno.Conn | undefined): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const count = await from.read(buffer);
        if (count === null) break;
        if (to === undefined || this.#state === "stalled") continue;
        await writeAll(to, buffer.subarray(0, count));
      }
    } catch {
      // One side was closed, by the peer or by cut().
    }
    closeQuietly(from);
    if (to !== undefined) closeQuietly(to);
  }

  async #closeAll(): Promise<void> {
    const pairs = [...this.#pairs];
    for (const pair of pairs) {
      closeQuietly(pair.client);
      if (pair.server !== undefined) closeQuietly(pair.server);
    }
    await Promise.all(pairs.map((pair) => pair.done));
    await this.#accepting;
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) {
    offset += await conn.write(bytes.subarray(offset));
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}
