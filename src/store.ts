/**
 * The MySQL store: pool, schema, the one-transaction insert of a message,
 * and the VRFY and EXPN look-ups. The only importer of mysql2.
 */

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

/** A member of a mailing group; `name` is set when the address is a user. */
export interface GroupMember {
  readonly address: string;
  readonly name: string | null;
}

/** MySQL cannot be reached or dropped the connection; the client gets 421. */
export class StoreUnavailableError extends Error {
  override name = "StoreUnavailableError";
}

/** What a session needs from the store. */
export interface Store {
  /** Inserts the message and its recipients in one transaction; resolves with the id after COMMIT. */
  insertMessage(message: NewMessage): Promise<string>;
  /** Users matching a VRFY argument; at most two, enough to tell one from many. */
  findUsers(query: string): Promise<User[]>;
  /** Members of the named group, empty when there is no such group. */
  expandGroup(name: string): Promise<GroupMember[]>;
}
