/**
 * Every reply the server sends: reply code, RFC 3463 enhanced status code
 * and text, keyed by situation, and the one formatter that writes them.
 */

/** One reply, single-line when `lines` has one entry. */
export interface Reply {
  readonly code: number;
  /** RFC 3463 code such as "2.1.0"; absent on 220, 354 and the EHLO reply. */
  readonly enhancedStatusCode?: string;
  readonly lines: readonly string[];
}

function reply(
  code: number,
  enhancedStatusCode: string | undefined,
  ...lines: string[]
): Reply {
  return { code, enhancedStatusCode, lines };
}

/** The commands HELP lists, with each one's syntax and purpose. */
export const HELP_TOPICS = {
  HELO: "HELO <domain>: identify the client",
  EHLO: "EHLO <domain>: identify the client and list the extensions",
  MAIL:
    "MAIL FROM:<reverse-path> [SIZE=<bytes>] [BODY=7BIT|8BITMIME]: start a mail transaction",
  RCPT: "RCPT TO:<forward-path>: add a recipient",
  DATA: "DATA: send the message, ended by a line with a single dot",
  RSET: "RSET: abort the mail transaction",
  VRFY: "VRFY <user>: look up a user by address, local part or name",
  EXPN: "EXPN <group>: list the members of a mailing group",
  HELP: "HELP [command]: describe the commands",
  NOOP: "NOOP: do nothing",
  QUIT: "QUIT: close the session",
} as const;

/** Replies keyed by situation; those that carry a value are functions. */
export const REPLIES = {
  greeting: (hostname: string) =>
    reply(220, undefined, `${hostname} ESMTP ready`),
  closing: (hostname: string) =>
    reply(221, "2.0.0", `${hostname} closing connection`),
  helpList: reply(
    214,
    "2.0.0",
    "Commands: " + Object.keys(HELP_TOPICS).join(" "),
    "HELP <command> describes one of them",
  ),
  helpTopic: (text: string) => reply(214, "2.0.0", text),
  ok: reply(250, "2.0.0", "OK"),
  reset: reply(250, "2.0.0", "Reset OK"),
  helo: (hostname: string, client: string) =>
    reply(250, undefined, `${hostname} greets ${client}`),
  ehlo: (hostname: string, client: string, extensions: readonly string[]) =>
    reply(250, undefined, `${hostname} greets ${client}`, ...extensions),
  senderAccepted: reply(250, "2.1.0", "Sender OK"),
  recipientAccepted: reply(250, "2.1.5", "Recipient OK"),
  messageStored: (id: string) => reply(250, "2.0.0", `OK stored as ${id}`),
  userFound: (mailbox: string) => reply(250, "2.1.5", mailbox),
  // The lines are passed whole: a large group spread into arguments would
  // overflow the call stack.
  groupMembers: (mailboxes: readonly string[]): Reply => ({
    code: 250,
    enhancedStatusCode: "2.1.5",
    lines: mailboxes,
  }),
  startData: reply(354, undefined, "End data with <CR><LF>.<CR><LF>"),

  commandLineTooLong: reply(500, "5.5.2", "Line too long"),
  commandBareLineEnding: reply(500, "5.5.2", "Bare CR or LF in command line"),
  commandEmpty: reply(500, "5.5.2", "Empty command"),
  commandNotAscii: reply(
    500,
    "5.5.2",
    "Command contains a NUL or non-ASCII byte",
  ),
  commandUnknown: reply(500, "5.5.1", "Command not recognized"),
  argumentNotAllowed: reply(500, "5.5.4", "This command takes no argument"),
  dataLineTooLong: reply(
    500,
    "5.5.2",
    "Line too long in message data; message not stored",
  ),
  heloArgumentInvalid: reply(
    501,
    "5.5.4",
    "Expected a domain or address literal",
  ),
  senderSyntax: reply(501, "5.1.7", "Invalid sender address"),
  recipientSyntax: reply(501, "5.1.3", "Invalid recipient address"),
  parameterSyntax: reply(501, "5.5.4", "Invalid ESMTP parameter"),
  argumentRequired: reply(501, "5.5.4", "An argument is required"),
  dataArgument: reply(501, "5.5.4", "DATA takes no argument"),
  starttlsArgument: reply(501, "5.5.4", "STARTTLS takes no argument"),
  commandNotImplemented: reply(502, "5.5.1", "Command not implemented"),
  heloDuplicate: reply(503, "5.5.1", "Already greeted"),
  mailBeforeHelo: reply(503, "5.5.1", "Send HELO or EHLO first"),
  mailNested: reply(503, "5.5.1", "Mail transaction already open"),
  rcptBeforeMail: reply(503, "5.5.1", "Send MAIL first"),
  dataBeforeMail: reply(503, "5.5.1", "Send MAIL first"),
  dataBeforeRcpt: reply(503, "5.5.1", "Send RCPT first"),
  tlsAlreadyActive: reply(503, "5.5.1", "TLS already active"),
  parameterNotRecognized: reply(555, "5.5.4", "ESMTP parameter not recognized"),
  tooManyRecipients: reply(452, "4.5.3", "Too many recipients"),
  insufficientStorage: reply(
    421,
    "4.3.1",
    "Insufficient system storage; message not stored, try again later",
  ),
  messageTooBig: reply(552, "5.3.4", "Message exceeds the size limit"),
  dataBareLineEnding: reply(
    550,
    "5.6.0",
    "Bare CR or LF in message data; message not stored",
  ),
  userNotFound: reply(550, "5.1.1", "No such user"),
  userAmbiguous: reply(553, "5.1.4", "Ambiguous: more than one user matches"),
  groupNotFound: reply(550, "5.1.1", "No such group, or it has no members"),

  tooManyConnections: reply(
    421,
    "4.3.2",
    "Too many connections, try again later",
  ),
  idleTimeout: reply(421, "4.4.2", "Idle timeout, closing connection"),
  dataTimeout: reply(421, "4.4.2", "Mail data took too long, closing"),
  shuttingDown: reply(421, "4.3.2", "Server shutting down"),
  storeUnavailable: reply(
    421,
    "4.3.0",
    "Message store unavailable, try again later",
  ),
  internalError: reply(421, "4.3.0", "Internal error, closing connection"),
} as const;

/** Replaces anything outside printable 7-bit ASCII, which replies must be. */
function toPrintableAscii(text: string): string {
  return text.replace(/[^\x20-\x7e]/g, "?");
}

/**
 * Formats a reply for the wire: `code-text` on all lines but the last,
 * `code text` on the last, each ended by CRLF. With `enhanced`, the enhanced
 * status code follows the reply code on every line.
 */
export function formatReply(reply: Reply, enhanced: boolean): string {
  const prefix = enhanced && reply.enhancedStatusCode !== undefined
    ? `${reply.enhancedStatusCode} `
    : "";
  const last = reply.lines.length - 1;
  let text = "";
  reply.lines.forEach((line, index) => {
    const separator = index === last ? " " : "-";
    text += `${reply.code}${separator}${prefix}${toPrintableAscii(line)}\r\n`;
  });
  return text;
}
