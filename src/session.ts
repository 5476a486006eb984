/**
 * The SMTP state machine of one session. It does no I/O of its own: the
 * connection feeds it command lines and mail data, and writes the replies
 * it returns.
 */

import {
  type EsmtpParameter,
  isHeloArgument,
  parseMailArgument,
  parseRcptArgument,
} from "./address.ts";
import type { Config } from "./config.ts";
import type { CommandLine, MailData } from "./line_reader.ts";
import { describeError, log } from "./log.ts";
import { buildTraceHeaders, extractFields } from "./message.ts";
import { formatReply, HELP_TOPICS, REPLIES, type Reply } from "./replies.ts";
import {
  type GroupMember,
  type Store,
  StoreUnavailableError,
  type User,
} from "./store.ts";

/** The stage of a session: greeted or not, and how far the mail transaction got. */
export type SessionState = "start" | "ready" | "mail" | "rcpt" | "data";

/** The sender, recipients and parameters of the current mail transaction. */
export interface Envelope {
  reversePath: string;
  forwardPaths: string[];
  bodyType: "7BIT" | "8BITMIME";
  declaredSize: number | null;
}

/** A reply and what the connection does after sending it. */
export interface Step {
  readonly reply: Reply;
  /** "data": read mail data next; "close": close the connection. */
  readonly next: "command" | "data" | "close";
}

export interface SessionOptions {
  readonly config: Config;
  readonly store: Store;
  /** The client's IP address, without port. */
  readonly clientAddress: string;
  /** Short id for logs and the Received: header. */
  readonly id: string;
}

type Handler = (session: Session, argument: string) => Step | Promise<Step>;

interface Command {
  readonly handler: Handler;
  /** The states that allow the command; in others it gets a 503. */
  readonly states: readonly SessionState[];
  readonly outOfSequence?: (state: SessionState) => Reply;
}

const ANY_STATE = ["start", "ready", "mail", "rcpt"] as const;

/** BODY values accepted; BINARYMIME waits for CHUNKING (RFC 3030). */
const SUPPORTED_BODY_TYPES = ["7BIT", "8BITMIME"] as const;

function reply(reply: Reply): Step {
  return { reply, next: "command" };
}

function newEnvelope(): Envelope {
  return {
    reversePath: "",
    forwardPaths: [],
    bodyType: "7BIT",
    declaredSize: null,
  };
}

/** One SMTP session from greeting to close. */
export class Session {
  readonly id: string;
  readonly config: Config;
  readonly store: Store;
  readonly clientAddress: string;
  readonly startedAt = Date.now();
  heloName: string | null = null;
  /** Set by EHLO: replies carry enhanced status codes from then on. */
  extended = false;
  envelope: Envelope = newEnvelope();
  messagesStored = 0;
  #state: SessionState = "start";

  constructor(options: SessionOptions) {
    this.id = options.id;
    this.config = options.config;
    this.store = options.store;
    this.clientAddress = options.clientAddress;
  }

  get state(): SessionState {
    return this.#state;
  }

  enterState(state: SessionState): void {
    if (state === this.#state) return;
    log("debug", "state", { session: this.id, from: this.#state, to: state });
    this.#state = state;
  }

  /** Formats a reply as this session sends it. */
  format(reply: Reply): string {
    return formatReply(reply, this.extended);
  }

  greeting(): Step {
    return reply(REPLIES.greeting(this.config.hostname));
  }

  /** Handles one command line and returns the reply to it. */
  async handleCommand(line: CommandLine): Promise<Step> {
    try {
      const parsed = parseCommandLine(line);
      if ("reply" in parsed) return reply(parsed.reply);
      log("debug", "command", { session: this.id, verb: parsed.verb });

      const command = COMMANDS[parsed.verb as keyof typeof COMMANDS] as
        | Command
        | undefined;
      if (command === undefined) return reply(REPLIES.commandUnknown);

      if (!command.states.includes(this.#state)) {
        return reply(
          command.outOfSequence?.(this.#state) ?? REPLIES.commandNotImplemented,
        );
      }

      return await command.handler(this, parsed.argument);
    } catch (error) {
      return this.#internalError(error);
    }
  }

  /** Handles the mail data that followed a 354, and returns the one reply to it. */
  async receiveData(data: MailData): Promise<Step> {
    try {
      if (data.kind !== "data") return this.#rejectData(data.kind);
      return await this.#storeMessage(data.bytes);
    } catch (error) {
      if (error instanceof StoreUnavailableError) {
        return { reply: REPLIES.storeUnavailable, next: "close" };
      }
      return this.#internalError(error);
    }
  }

  /** Clears the mail transaction; the greeting stays. */
  resetTransaction(): void {
    this.envelope = newEnvelope();
    this.enterState(this.heloName === null ? "start" : "ready");
  }

  #rejectData(kind: Exclude<MailData["kind"], "data">): Step {
    if (kind === "insufficientStorage") {
      // The data was dropped for lack of memory; the client sends it again
      // later, as after any 421.
      log("warn", "data_rejected", {
        session: this.id,
        reason: "insufficient_storage",
      });
      return { reply: REPLIES.insufficientStorage, next: "close" };
    }

    // The envelope stays, so the client may send DATA again.
    this.enterState("rcpt");
    const rejections = {
      tooBig: [REPLIES.messageTooBig, "message_too_big"],
      bareLineEnding: [REPLIES.dataBareLineEnding, "bare_line_ending"],
      lineTooLong: [REPLIES.dataLineTooLong, "line_too_long"],
    } as const;
    const [rejection, reason] = rejections[kind];
    log("warn", "data_rejected", { session: this.id, reason });
    return reply(rejection);
  }

  async #storeMessage(data: Uint8Array): Promise<Step> {
    const envelope = this.envelope;
    const receivedAt = new Date();
    const trace = buildTraceHeaders({
      reversePath: envelope.reversePath,
      forwardPaths: envelope.forwardPaths,
      heloName: this.heloName ?? "",
      clientAddress: this.clientAddress,
      hostname: this.config.hostname,
      protocol: this.extended ? "ESMTP" : "SMTP",
      receivedAt,
      transactionId: `${this.id}.${this.messagesStored + 1}`,
    });
    const raw = new Uint8Array(trace.length + data.length);
    raw.set(trace);
    raw.set(data, trace.length);
    const fields = await extractFields(data);

    const id = await this.store.insertMessage({
      sender: envelope.reversePath,
      recipients: envelope.forwardPaths,
      raw,
      subject: fields.subject,
      date: fields.date,
      body: fields.body,
      receivedAt,
      clientAddress: this.clientAddress,
      helo: this.heloName ?? "",
    });

    this.messagesStored++;
    log("info", "stored", {
      session: this.id,
      id,
      sender: envelope.reversePath,
      recipients: envelope.forwardPaths.length,
      bytes: raw.length,
    });
    this.resetTransaction();
    return reply(REPLIES.messageStored(id));
  }

  #internalError(error: unknown): Step {
    if (error instanceof StoreUnavailableError) {
      return { reply: REPLIES.storeUnavailable, next: "close" };
    }
    const stack = error instanceof Error ? error.stack : undefined;
    log("error", "handler_failed", {
      session: this.id,
      error: describeError(error),
      stack,
    });
    return { reply: REPLIES.internalError, next: "close" };
  }
}

type ParsedCommand = { verb: string; argument: string } | { reply: Reply };

/** Checks a command line's bytes, then splits it into verb and argument. */
function parseCommandLine(line: CommandLine): ParsedCommand {
  if (line.kind === "tooLong") return { reply: REPLIES.commandLineTooLong };
  if (line.kind === "bareLineEnding") {
    return { reply: REPLIES.commandBareLineEnding };
  }

  const bytes = line.bytes;
  for (const byte of bytes) {
    if (byte === 0 || byte > 0x7f) return { reply: REPLIES.commandNotAscii };
  }

  const text = String.fromCharCode(...bytes);
  const space = text.indexOf(" ");
  const verb = (space < 0 ? text : text.slice(0, space)).toUpperCase();
  if (verb === "") return { reply: REPLIES.commandEmpty };
  // Clients differ in spaces around the argument; none carry meaning.
  const argument = space < 0 ? "" : text.slice(space + 1).trim();
  return { verb, argument };
}

function handleHelo(session: Session, argument: string): Step {
  if (!isHeloArgument(argument)) return reply(REPLIES.heloArgumentInvalid);

  session.heloName = argument;
  session.enterState("ready");
  return reply(REPLIES.helo(session.config.hostname, argument));
}

function handleEhlo(session: Session, argument: string): Step {
  if (!isHeloArgument(argument)) return reply(REPLIES.heloArgumentInvalid);

  session.heloName = argument;
  session.extended = true;
  session.enterState("ready");
  const extensions = [
    "PIPELINING",
    `SIZE ${session.config.maxMessageBytes}`,
    "8BITMIME",
    "ENHANCEDSTATUSCODES",
    "HELP",
  ];
  return reply(REPLIES.ehlo(session.config.hostname, argument, extensions));
}

function handleMail(session: Session, argument: string): Step {
  const parsed = parseMailArgument(argument);
  if (!parsed.ok) {
    return reply(
      parsed.error === "path" ? REPLIES.senderSyntax : REPLIES.parameterSyntax,
    );
  }

  const checked = checkMailParameters(session, parsed.value.parameters);
  if ("reply" in checked) return reply(checked.reply);

  if (
    checked.declaredSize !== null &&
    checked.declaredSize > session.config.maxMessageBytes
  ) {
    log("warn", "size_limit", {
      session: session.id,
      declared: checked.declaredSize,
      limit: session.config.maxMessageBytes,
    });
    return reply(REPLIES.messageTooBig);
  }

  session.envelope = {
    reversePath: parsed.value.address,
    forwardPaths: [],
    bodyType: checked.bodyType,
    declaredSize: checked.declaredSize,
  };
  session.enterState("mail");
  return reply(REPLIES.senderAccepted);
}

type CheckedParameters =
  | { bodyType: Envelope["bodyType"]; declaredSize: number | null }
  | { reply: Reply };

/**
 * Checks MAIL's ESMTP parameters: only SIZE and BODY are advertised, and
 * only after EHLO (RFC 5321 4.1.1.11: others get 555). Whatever their
 * order, a malformed value (501) is reported before an unrecognized
 * parameter (555).
 */
function checkMailParameters(
  session: Session,
  parameters: readonly EsmtpParameter[],
): CheckedParameters {
  if (parameters.length > 0 && !session.extended) {
    return { reply: REPLIES.parameterNotRecognized };
  }

  const seen = new Set<string>();
  for (const { keyword, value } of parameters) {
    if (seen.has(keyword)) return { reply: REPLIES.parameterSyntax };
    seen.add(keyword);
    if (!isValidParameterValue(keyword, value)) {
      return { reply: REPLIES.parameterSyntax };
    }
  }

  let bodyType: Envelope["bodyType"] = "7BIT";
  let declaredSize: number | null = null;
  for (const { keyword, value } of parameters) {
    const upper = value?.toUpperCase();
    const body = SUPPORTED_BODY_TYPES.find((name) => name === upper);
    if (keyword === "SIZE") declaredSize = Number(value);
    else if (keyword === "BODY" && body !== undefined) bodyType = body;
    else return { reply: REPLIES.parameterNotRecognized };
  }
  return { bodyType, declaredSize };
}

/**
 * Checks the value of SIZE (digits; RFC 1870 caps it at 20, but any longer
 * number is just over the limit) and of BODY (7BIT, 8BITMIME, or
 * BINARYMIME, which is recognized but not offered before CHUNKING).
 */
function isValidParameterValue(keyword: string, value: string | null): boolean {
  if (keyword === "SIZE") return value !== null && /^\d+$/.test(value);
  if (keyword === "BODY") {
    const type = value?.toUpperCase();
    return type === "7BIT" || type === "8BITMIME" || type === "BINARYMIME";
  }
  return true;
}

function handleRcpt(session: Session, argument: string): Step {
  const parsed = parseRcptArgument(argument);
  if (!parsed.ok) {
    return reply(
      parsed.error === "path"
        ? REPLIES.recipientSyntax
        : REPLIES.parameterSyntax,
    );
  }
  if (parsed.value.parameters.length > 0) {
    return reply(REPLIES.parameterNotRecognized);
  }

  // The same address twice is accepted twice and kept once.
  const forwardPaths = session.envelope.forwardPaths;
  const address = parsed.value.address;
  const key = address.toLowerCase();
  if (forwardPaths.some((path) => path.toLowerCase() === key)) {
    return reply(REPLIES.recipientAccepted);
  }

  if (forwardPaths.length >= session.config.maxRecipients) {
    log("warn", "recipient_limit", {
      session: session.id,
      limit: session.config.maxRecipients,
    });
    return reply(REPLIES.tooManyRecipients);
  }

  forwardPaths.push(address);
  session.enterState("rcpt");
  return reply(REPLIES.recipientAccepted);
}

function handleData(session: Session, argument: string): Step {
  if (argument !== "") return reply(REPLIES.dataArgument);

  session.enterState("data");
  return { reply: REPLIES.startData, next: "data" };
}

function handleRset(session: Session, argument: string): Step {
  if (argument !== "") return reply(REPLIES.argumentNotAllowed);

  session.resetTransaction();
  return reply(REPLIES.reset);
}

function handleNoop(_session: Session, argument: string): Step {
  if (argument !== "") return reply(REPLIES.argumentNotAllowed);
  return reply(REPLIES.ok);
}

function handleQuit(session: Session, argument: string): Step {
  if (argument !== "") return reply(REPLIES.argumentNotAllowed);
  return { reply: REPLIES.closing(session.config.hostname), next: "close" };
}

function handleHelp(_session: Session, argument: string): Step {
  const topic = argument.toUpperCase() as keyof typeof HELP_TOPICS;
  if (argument !== "" && Object.hasOwn(HELP_TOPICS, topic)) {
    return reply(REPLIES.helpTopic(HELP_TOPICS[topic]));
  }
  return reply(REPLIES.helpList);
}

async function handleVrfy(session: Session, argument: string): Promise<Step> {
  if (argument === "") return reply(REPLIES.argumentRequired);

  const users = await session.store.findUsers(argument);
  if (users.length === 0) return reply(REPLIES.userNotFound);
  if (users.length > 1) return reply(REPLIES.userAmbiguous);
  return reply(REPLIES.userFound(formatMailbox(users[0]!)));
}

async function handleExpn(session: Session, argument: string): Promise<Step> {
  if (argument === "") return reply(REPLIES.argumentRequired);

  const members = await session.store.expandGroup(argument);
  if (members.length === 0) return reply(REPLIES.groupNotFound);
  return reply(REPLIES.groupMembers(members.map(formatMailbox)));
}

function handleNotImplemented(): Step {
  return reply(REPLIES.commandNotImplemented);
}

/** `Full Name <address>`, or `<address>` for a member with no name. */
function formatMailbox(member: User | GroupMember): string {
  if (member.name === null || member.name === "") return `<${member.address}>`;
  return `${encodeDisplayName(member.name)} <${member.address}>`;
}

/** RFC 2047 B-encodes a name that is not printable ASCII. */
function encodeDisplayName(name: string): string {
  if (/^[\x20-\x7e]*$/.test(name)) return name;
  const bytes = new TextEncoder().encode(name);
  return `=?UTF-8?B?${btoa(String.fromCharCode(...bytes))}?=`;
}

const mailOutOfSequence = (state: SessionState) =>
  state === "start" ? REPLIES.mailBeforeHelo : REPLIES.mailNested;

const dataOutOfSequence = (state: SessionState) =>
  state === "mail" ? REPLIES.dataBeforeRcpt : REPLIES.dataBeforeMail;

/** Each verb's handler and the states that allow it. */
const COMMANDS = {
  HELO: {
    handler: handleHelo,
    states: ["start"],
    outOfSequence: () => REPLIES.heloDuplicate,
  },
  EHLO: {
    handler: handleEhlo,
    states: ["start"],
    outOfSequence: () => REPLIES.heloDuplicate,
  },
  MAIL: {
    handler: handleMail,
    states: ["ready"],
    outOfSequence: mailOutOfSequence,
  },
  RCPT: {
    handler: handleRcpt,
    states: ["mail", "rcpt"],
    outOfSequence: () => REPLIES.rcptBeforeMail,
  },
  DATA: {
    handler: handleData,
    states: ["rcpt"],
    outOfSequence: dataOutOfSequence,
  },
  RSET: { handler: handleRset, states: ANY_STATE },
  NOOP: { handler: handleNoop, states: ANY_STATE },
  QUIT: { handler: handleQuit, states: ANY_STATE },
  HELP: { handler: handleHelp, states: ANY_STATE },
  VRFY: { handler: handleVrfy, states: ANY_STATE },
  EXPN: { handler: handleExpn, states: ANY_STATE },
  // Obsolete verbs and extensions not offered now get 502 (RFC 5321 4.2.4).
  SEND: { handler: handleNotImplemented, states: ANY_STATE },
  SOML: { handler: handleNotImplemented, states: ANY_STATE },
  SAML: { handler: handleNotImplemented, states: ANY_STATE },
  TURN: { handler: handleNotImplemented, states: ANY_STATE },
  STARTTLS: { handler: handleNotImplemented, states: ANY_STATE },
  AUTH: { handler: handleNotImplemented, states: ANY_STATE },
  BDAT: { handler: handleNotImplemented, states: ANY_STATE },
} as const satisfies Record<string, Command>;
